// Unit tests (vitest, with the kit's) for how the console shows a job (realtime/static/realtime/console/jobs.js): a bulk job
// with refused items looks partly failed or failed, never a green "succeeded".
import assert from 'node:assert/strict';
import { describe, it } from 'vitest';

import { jobProgress, shownStatus } from '../../../realtime/static/realtime/console/jobs.js';

const job = (status, total, done, failed) => ({ status, progress: { total, done, failed } });

describe('shownStatus', () => {
  it('keeps a job that failed on nothing as it is', () => {
    assert.equal(shownStatus(job('succeeded', 3, 3, 0)), 'succeeded');
    assert.equal(shownStatus(job('running', 3, 1, 0)), 'running');
    assert.equal(shownStatus(job('queued', 3, 0, 0)), 'queued');
    assert.equal(shownStatus(job('failed', 1, 0, 1)), 'failed');
    assert.equal(shownStatus({ status: 'succeeded' }), 'succeeded');
  });

  it('shows a finished job with some refused items as partly failed', () => {
    assert.equal(shownStatus(job('succeeded', 3, 3, 1)), 'partly_failed');
    assert.equal(shownStatus(job('succeeded', 20000, 20000, 19999)), 'partly_failed');
  });

  it('shows a finished job whose every item was refused as failed', () => {
    assert.equal(shownStatus(job('succeeded', 2, 2, 2)), 'failed');
    assert.equal(shownStatus(job('succeeded', 1, 1, 1)), 'failed');
  });

  it('waits for the end: a running job with refusals so far is still running', () => {
    assert.equal(shownStatus(job('running', 10, 4, 2)), 'running');
  });
});

describe('jobProgress', () => {
  it('counts a finished job as complete whatever its counts', () => {
    assert.deepEqual(jobProgress(job('failed', 1, 0, 1)), { total: 1, processed: 1, failed: 1, percent: 100 });
  });

  it('is the share done while it runs, never above the total', () => {
    assert.deepEqual(jobProgress(job('running', 4, 1, 0)), { total: 4, processed: 1, failed: 0, percent: 25 });
    assert.equal(jobProgress(job('running', 4, 9, 0)).processed, 4);
    assert.equal(jobProgress({ status: 'queued' }).percent, 0);
  });
});
