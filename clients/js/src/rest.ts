/**
 * The typed REST client: openapi-fetch over the types generated from the server's OpenAPI schema
 * (src/generated/api.ts), every path, parameter, body and response typed, error bodies included
 * (`{code, message, details?}` with `code` the union of every code the API can answer).
 *
 *   const api = createRestClient({ getToken: () => session.access });
 *   const { data, error, response } = await api.GET('/api/withdrawal-requests/', { params: { query: { status: 'pending' } } });
 *   if (error) switch (error.code) { case 'not_found': ... }
 *   updates.joinList(response);   // the list's X-Records-Seq: join the stream without a gap
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch';

import type { components, paths } from './generated/api';

export type { components, paths, operations } from './generated/api';
export { ERROR_CODES } from './generated/api';

/** Every component schema of the API (`Schemas['WithdrawalRequest']`, ...). */
export type Schemas = components['schemas'];
/** The body of every error the API answers. */
export type ApiError = components['schemas']['Error'];
/** Every `code` an error body can carry. */
export type ErrorCode = components['schemas']['ErrorCode'];
export type RestClient = Client<paths>;

type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

export interface RestOptions {
  /** Where the API is (default: this origin, `''`). */
  baseUrl?: string;
  /** The access token for each request (`Authorization: Bearer ...`); none: no header. */
  getToken?: TokenSource;
  /** A fetch of your own (tests, a worker's, node-fetch); default: the global one at call time. */
  fetch?: ClientOptions['fetch'];
  headers?: Record<string, string>;
}

/** A typed client for every path of the API. */
export function createRestClient({ baseUrl = '', getToken, fetch, headers }: RestOptions = {}): RestClient {
  const options: ClientOptions = { baseUrl, headers: { Accept: 'application/json', ...headers } };
  // Resolved at call time: a fetch mocked or installed after the client was made still counts.
  options.fetch = fetch ?? ((request: Request) => globalThis.fetch(request));
  const client = createClient<paths>(options);
  if (getToken) {
    client.use({
      async onRequest({ request }) {
        const token = await getToken();
        if (token) request.headers.set('Authorization', `Bearer ${token}`);
        return request;
      },
    });
  }
  return client;
}

/** A list's watermark: the unit's seq (and the stream's epoch) the list was read at. */
export interface Watermark {
  seq: number | null;
  epoch: string | null;
}

/** `X-Records-Seq` and `X-Records-Epoch` of a list response (UpdatesClient.joinList takes them). */
export function readWatermark(response: { headers: { get(name: string): string | null } }): Watermark {
  const seq = Number.parseInt(response.headers.get('X-Records-Seq') ?? '', 10);
  return { seq: Number.isNaN(seq) ? null : seq, epoch: response.headers.get('X-Records-Epoch') || null };
}

/** True for an API error body (`{code, message}`). */
export function isApiError(body: unknown): body is ApiError {
  return Boolean(body) && typeof body === 'object' && typeof (body as ApiError).code === 'string'
    && typeof (body as ApiError).message === 'string';
}
