-- 007: the reason too_old. BuyRejected version 2 adds it: `decide` refused a
-- BuyRequested whose requested_at was older than its idempotency window
-- (decide.idempotency.window.ms) without judging it; the request may have
-- been decided before. A too_old refusal is no decision, so the projector
-- keeps the decision a request has when a too_old refusal of it comes later
-- (a retry of an old record), and a decision that comes after a too_old
-- refusal replaces it (the client sent it again with a new time).

set local search_path to orderlog;

alter table buy_decisions drop constraint buy_decisions_reason_check;
alter table buy_decisions add constraint buy_decisions_reason_check
    check (reason in ('blacklisted', 'level', 'limit', 'sold_out', 'unknown_sku', 'too_old'));
comment on column buy_decisions.reason is
    'Rejected: why (blacklisted, level, limit, sold_out, unknown_sku), or too_old: refused unjudged, older than '
    'decide''s idempotency window (no decision: a later decision replaces the row); null when accepted.';
