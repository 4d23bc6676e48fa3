/**
 * The updates client's old address, kept for SPAs that import it from here:
 *
 *   import { UpdatesClient, invalidationKeys } from '/static/realtime/updates-client.js';
 *
 * It is now the typed client kit, @records/client (clients/js, docs/client.md), built into
 * kit/records-client.js: the same classes, functions and events, with the types, the REST client and
 * the React hooks in the package. New code imports the package (or kit/records-client.js).
 */
export * from './kit/records-client.js';
