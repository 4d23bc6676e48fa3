/**
 * The kit's example app: a React page that signs in, lists the unit's withdrawal requests and keeps
 * the list live, as an SPA team would build it on @records/client:
 *   - the typed REST client signs in and reads the list; the list's watermark (X-Records-Seq) is where
 *     the updates client joins the stream, so nothing is missed or applied twice;
 *   - TanStack Query holds the list; useLiveQueries patches it in place on each update (and refetches
 *     it, and everything on a `refetch`);
 *   - useUpdates, usePresence and useNotifications show the connection, who is online and the bell.
 * `window.exampleStats` counts what happened, for the browser test (tests/realtime/console/test_kit_example.py).
 */
import { QueryClient, QueryClientProvider, useQuery } from '@tanstack/react-query';
import { UpdatesClient, createRestClient, type RestClient, type Schemas } from '@records/client';
import { UpdatesProvider, useLiveQueries, useNotifications, usePresence, useUpdates } from '@records/client/react';
import { StrictMode, useState, type FormEvent } from 'react';
import { createRoot } from 'react-dom/client';

type Page = Schemas['PaginatedWithdrawalRequestList'];

const stats = { updates: 0, refetches: 0, listFetches: 0, lastSeq: null as number | null, closes: [] as string[] };
Object.assign(window, { exampleStats: stats });
// ?fast=1: reconnect within a second or two, for a minute or more (the browser test; production backs
// off to 30 s and gives up after 10 attempts)
const fast = new URLSearchParams(window.location.search).has('fast');

interface Session {
  api: RestClient;
  updates: UpdatesClient;
  queryClient: QueryClient;
  username: string;
}

async function signIn(username: string, password: string): Promise<Session> {
  const tokens = { access: '', refresh: '' };
  const anonymous = createRestClient();
  const { data, error } = await anonymous.POST('/api/auth/token/', { body: { username, password } });
  if (error || !data) throw new Error(error ? `${error.code}: ${error.message}` : 'no answer');
  Object.assign(tokens, data);
  const api = createRestClient({ getToken: () => tokens.access });
  const refreshToken = async () => {
    const answer = await anonymous.POST('/api/auth/token/refresh/', { body: { refresh: tokens.refresh } });
    if (!answer.data) return null;
    Object.assign(tokens, answer.data);
    return tokens.access;
  };
  const updates = new UpdatesClient({
    getToken: () => tokens.access, refreshToken, presence: true, batch: true,
    ...(fast ? { baseDelayMs: 250, maxDelayMs: 1500, maxAttempts: 60 } : {}),
  });
  updates.on('update', () => {
    stats.updates += 1;
  });
  updates.on('close', ({ code, reason }) => {
    stats.closes.push(`${code} ${reason}`);
  });
  updates.on('refetch', () => {
    stats.refetches += 1;
  });
  const queryClient = new QueryClient({ defaultOptions: { queries: { staleTime: Infinity, retry: 1 } } });
  // The first page of the list, then the stream from where that list was read.
  const first = await api.GET('/api/withdrawal-requests/', { params: { query: { page_size: 100 } } });
  stats.listFetches += 1;
  if (!first.data) throw new Error('could not read the list');
  queryClient.setQueryData(['withdrawal-requests'], first.data);
  updates.joinList(first.response).start();
  return { api, updates, queryClient, username };
}

function Requests({ session }: { session: Session }) {
  const { status, lastSeq } = useUpdates();
  stats.lastSeq = lastSeq;
  useLiveQueries(session.queryClient);
  const { users } = usePresence();
  const { unread } = useNotifications();
  const list = useQuery({
    queryKey: ['withdrawal-requests'],
    queryFn: async (): Promise<Page> => {
      stats.listFetches += 1;
      const { data, error } = await session.api.GET('/api/withdrawal-requests/', { params: { query: { page_size: 100 } } });
      if (error || !data) throw new Error(error ? error.code : 'no answer');
      return data;
    },
  });
  return (
    <main>
      <header>
        <strong>{session.username}</strong>{' '}
        <span data-testid="status" data-status={status}>{status}</span>{' '}
        <span data-testid="last-seq">{lastSeq ?? ''}</span>{' '}
        <span data-testid="unread">{unread ?? 0}</span> unread
      </header>
      <p data-testid="online">{users.map((u) => u.username).join(', ')}</p>
      <table>
        <thead><tr><th>Request</th><th>Status</th><th>Reason</th></tr></thead>
        <tbody data-testid="rows" data-count={list.data?.results.length ?? 0}>
          {(list.data?.results ?? []).map((row) => (
            <tr key={row.id} data-testid={`row-${row.id}`}>
              <td>{row.request_number}</td>
              <td data-testid={`status-${row.id}`}>{row.status}</td>
              <td>{row.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

function SignIn({ onSession }: { onSession: (session: Session) => void }) {
  const [problem, setProblem] = useState('');
  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    signIn(String(form.get('username')), String(form.get('password'))).then(onSession, (error: Error) => setProblem(error.message));
  };
  return (
    <form onSubmit={submit}>
      <input name="username" data-testid="username" placeholder="username" />
      <input name="password" data-testid="password" type="password" placeholder="password" />
      <button type="submit" data-testid="sign-in">Sign in</button>
      <p data-testid="problem">{problem}</p>
    </form>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  if (!session) return <SignIn onSession={setSession} />;
  return (
    <QueryClientProvider client={session.queryClient}>
      <UpdatesProvider client={session.updates}>
        <Requests session={session} />
      </UpdatesProvider>
    </QueryClientProvider>
  );
}

const root = document.getElementById('root');
if (root) createRoot(root).render(<StrictMode><App /></StrictMode>);
