/**
 * @records/client: the updates client (/ws/updates/), the typed REST client and the types generated
 * from the server's definitions. React hooks: `@records/client/react`. docs/client.md is the guide.
 */
export * from './updates';
export * from './rest';
export * from './invalidation';
export { TypedEventTarget, type DetailEvent } from './emitter';
export * from './generated/messages';
