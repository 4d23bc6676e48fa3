// Typed fakes for the TypeScript tests: a socket the test plays the server for, and a clock.
import type { ServerMessage } from '../src/generated/messages';
import type { SocketLike, Timers } from '../src/updates';

export class FakeClock implements Timers {
  now = 0;
  private nextId = 1;
  private timers = new Map<number, { fn: () => void; at: number; every: number | null }>();

  setTimeout(fn: () => void, ms: number): number {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: null });
    return id;
  }

  setInterval(fn: () => void, ms: number): number {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: ms });
    return id;
  }

  clearTimeout(id: unknown): void {
    this.timers.delete(id as number);
  }

  clearInterval(id: unknown): void {
    this.timers.delete(id as number);
  }

  tick(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      this.now = timer.at;
      if (timer.every === null) this.timers.delete(id);
      else timer.at += timer.every;
      timer.fn();
    }
    this.now = end;
  }
}

export class FakeSocket implements SocketLike {
  static instances: FakeSocket[] = [];
  readonly url: URL;
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: SocketLike['onopen'] = null;
  onmessage: SocketLike['onmessage'] = null;
  onclose: SocketLike['onclose'] = null;
  onerror: SocketLike['onerror'] = null;

  constructor(url: string) {
    this.url = new URL(url);
    FakeSocket.instances.push(this);
  }

  send(text: string): void {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // the server's side
  receive(message: ServerMessage | string): void {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
  }

  greet(seq: number, extra: Partial<Extract<ServerMessage, { type: 'connection_established' }>> = {}): void {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({
      type: 'connection_established', message: 'Connected to unit u updates', unit_id: '6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69',
      seq, unread_notifications: 0, expires_at: '2099-01-01T00:00:00.000Z', ...extra,
    });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

export const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

export const ID = (n: number): string => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

export function update(seq: number, entity: 'withdrawal' | 'crate' = 'withdrawal', status = 'approved', action: 'updated' | 'deleted' | 'created' = 'updated') {
  return {
    type: 'data_update' as const, entity, action, data: { id: ID(seq), status }, timestamp: '2026-01-15T10:30:00.000Z', seq,
  };
}

/** A fetch for the ticket endpoint: a new ticket each call. */
export function ticketFetch() {
  let n = 0;
  return async () => {
    n += 1;
    return { ok: true, status: 201, json: async () => ({ ticket: `ticket-${n}` }) };
  };
}
