// The typed REST client against a fake fetch: the token goes in the header, an error body comes back
// typed with its code, and a list's watermark is read for the updates client.
import { describe, expect, expectTypeOf, it } from 'vitest';

import { ERROR_CODES, createRestClient, isApiError, readWatermark, type ErrorCode, type Schemas } from '../src/index';

function fakeFetch(answer: (request: Request) => Response) {
  const requests: Request[] = [];
  const fetch = async (request: Request) => {
    requests.push(request);
    return answer(request);
  };
  return { fetch, requests };
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });

describe('createRestClient', () => {
  it('sends the access token and the typed query, and returns the typed page with its watermark', async () => {
    const page = { count: 1, next: null, previous: null, results: [{ id: 'r1', request_number: 'WR-1', status: 'pending' }] };
    const { fetch, requests } = fakeFetch(() => json(page, 200, { 'X-Records-Seq': '12', 'X-Records-Epoch': 'e1' }));
    let token = 'access-1';
    const api = createRestClient({ baseUrl: 'http://api.test', getToken: () => token, fetch });
    const { data, response } = await api.GET('/api/withdrawal-requests/', { params: { query: { status: ['pending'], page: 2 } } });
    token = 'access-2';
    await api.GET('/api/me/');
    expect(requests.map((r) => r.headers.get('Authorization'))).toEqual(['Bearer access-1', 'Bearer access-2']);
    expect(new URL(requests[0]!.url).search).toBe('?status=pending&page=2');
    expect(data?.results[0]?.request_number).toBe('WR-1');
    expectTypeOf(data!.results[0]!).toEqualTypeOf<Schemas['WithdrawalRequest']>();
    expect(readWatermark(response)).toEqual({ seq: 12, epoch: 'e1' });
  });

  it('types an error body: code is the union of every code the API answers', async () => {
    const { fetch } = fakeFetch(() => json({ code: 'four_eyes', message: 'You filed it.' }, 403));
    const api = createRestClient({ baseUrl: 'http://api.test', fetch });
    const { data, error } = await api.POST('/api/withdrawal-requests/{id}/approve/', {
      params: { path: { id: 'r1' } },
      body: { reason: 'ok', version: 1, signature: { password: 'pw', meaning: 'approved' } },
    });
    expect(data).toBeUndefined();
    expect(isApiError(error)).toBe(true);
    expect(error?.code).toBe('four_eyes');
    expectTypeOf(error!.code).toEqualTypeOf<ErrorCode>();
    expect(ERROR_CODES).toContain('stale_version');
  });

  it('reads no watermark from a response without one', () => {
    expect(readWatermark(new Response('[]'))).toEqual({ seq: null, epoch: null });
  });
});
