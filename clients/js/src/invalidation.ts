/**
 * Which cached queries an update makes stale: the seed's React Query keys ("Cache Invalidation"),
 * per entity. Framework-free (src/react.ts builds the TanStack Query integration on it).
 */
import type { DataUpdate } from './generated/messages';

const COMMON_KEYS = ['dashboard', 'summary'] as const;
const REQUEST_KEYS = {
  withdrawal: ['withdrawal-requests', 'withdrawal-request'],
  destruction: ['destruction-requests', 'destruction-request'],
  transfer: ['transfer-requests', 'transfer-request'],
} as const;

export const ALL_QUERY_KEYS: readonly string[] = Object.freeze([
  ...REQUEST_KEYS.withdrawal, ...REQUEST_KEYS.destruction, ...REQUEST_KEYS.transfer,
  'sendback-records', 'crates', 'crate', 'legal-holds', 'legal-hold', 'audit-reviews', 'audit-trail', ...COMMON_KEYS,
]);

/** The list query key (first element) of each entity's list, and of its detail. */
export const LIST_KEYS = {
  withdrawal: 'withdrawal-requests',
  destruction: 'destruction-requests',
  transfer: 'transfer-requests',
  sendback: 'sendback-records',
  crate: 'crates',
  legal_hold: 'legal-holds',
  audit_review: 'audit-reviews',
} as const;
export const DETAIL_KEYS = {
  withdrawal: 'withdrawal-request',
  destruction: 'destruction-request',
  transfer: 'transfer-request',
  sendback: null,
  crate: 'crate',
  legal_hold: 'legal-hold',
  audit_review: null,
} as const;

type Entity = DataUpdate['entity'];

/** The query keys (first key element) an update makes stale. A send-back also touches its
 *  request's lists; an unknown entity invalidates everything, which is always safe. */
export function invalidationKeys(update: Pick<DataUpdate, 'entity'> & { data?: Partial<DataUpdate['data']> } | null | undefined): string[] {
  const entity = update && (update.entity as Entity | undefined);
  if (entity === 'withdrawal' || entity === 'destruction' || entity === 'transfer') return [...REQUEST_KEYS[entity], ...COMMON_KEYS];
  if (entity === 'sendback') {
    const requestEntity = update?.data?.request_entity;
    const request = requestEntity ? REQUEST_KEYS[requestEntity] : [];
    return ['sendback-records', ...request, ...COMMON_KEYS];
  }
  if (entity === 'crate') return ['crates', 'crate', ...COMMON_KEYS];
  // A hold or its release changes its crates' `on_hold` too (their own updates follow it).
  if (entity === 'legal_hold') return ['legal-holds', 'legal-hold', 'crates', 'crate', ...COMMON_KEYS];
  if (entity === 'audit_review') return ['audit-reviews', 'audit-trail', ...COMMON_KEYS];
  return [...ALL_QUERY_KEYS];
}
