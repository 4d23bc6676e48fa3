// How the console shows a job: pure functions of the job as the API and `job_update` give it
// (`{status, progress: {total, done, failed}}`), unit-tested in tests/realtime/static/console-jobs.test.mjs.

export const TERMINAL_JOB = new Set(['succeeded', 'failed']);

/** How far a job got. A finished job is complete whatever its counts say (a refused single job
 *  reports done 0, failed 1; a bulk counts every id with an outcome, refused or not, as done). */
export function jobProgress(job) {
  const { total = 0, done = 0, failed = 0 } = job.progress || {};
  const finished = TERMINAL_JOB.has(job.status);
  const processed = finished ? total : Math.min(total, done);
  let percent = 0;
  if (finished) percent = 100;
  else if (total) percent = Math.round((processed / total) * 100);
  return { total, processed, failed, percent };
}

/** What a job looks like: a finished job that failed on some (or all) of its items is partly failed
 *  (or failed), never green, whatever its own status says (a bulk job "succeeds" once every item has
 *  an outcome, refused or not). */
export function shownStatus(job) {
  const { total = 0, failed = 0 } = job.progress || {};
  if (job.status !== 'succeeded' || !failed) return job.status;
  return failed >= total ? 'failed' : 'partly_failed';
}
