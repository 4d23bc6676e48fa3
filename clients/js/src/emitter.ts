/**
 * A typed event emitter on the platform's own EventTarget (pages, workers, Node 18+: no DOM needed).
 * `on(name, cb)` hands `cb` the event's detail and returns a function that unregisters it;
 * `addEventListener(name, (event) => event.detail)` works too, for code written against the DOM API.
 */
export interface DetailEvent<T> extends Event {
  readonly detail: T;
}

function makeEvent<T>(name: string, detail: T): DetailEvent<T> {
  if (typeof CustomEvent === 'function') return new CustomEvent(name, { detail });
  const event = new Event(name) as Event & { detail: T };
  Object.defineProperty(event, 'detail', { value: detail });
  return event;
}

export class TypedEventTarget<M extends object> extends EventTarget {
  /** `cb(detail)` on every `name` event; returns a function that unregisters it. */
  on<K extends keyof M & string>(name: K, cb: (detail: M[K]) => void): () => void {
    const listener = (event: Event) => cb((event as DetailEvent<M[K]>).detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  /** `cb(detail)` on the next `name` event only. */
  once<K extends keyof M & string>(name: K, cb: (detail: M[K]) => void): () => void {
    const off = this.on(name, (detail) => {
      off();
      cb(detail);
    });
    return off;
  }

  protected emit<K extends keyof M & string>(name: K, detail: M[K]): void {
    this.dispatchEvent(makeEvent(name, detail));
  }
}
