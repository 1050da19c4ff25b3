-- 004: replaying events over an existing projection changes nothing.
--
-- last_partition, last_offset: where (in its topic) the last event applied to
-- the row was. The events of an order or a sku live in one partition (their
-- key), so an event of that partition at or below the offset was applied
-- already: a replay (another consumer group over the same database, say)
-- skips it. (A refund that moves to another order gets events in another
-- partition: those are applied by the rules alone.)
-- order_payments: the payments counted in orders.paid_amount, one row each, so
-- an OrderPaid delivered again, even after another payment, counts once.

set local search_path to orderlog;

alter table orders add column last_partition int, add column last_offset bigint;
alter table refunds add column last_partition int, add column last_offset bigint;
alter table skus add column last_partition int, add column last_offset bigint;
comment on column orders.last_offset is
    'Offset in the orders topic (partition last_partition) of the last event applied to this row; '
    'events of that partition at or below it are skipped.';
comment on column refunds.last_offset is
    'Offset in the after-sales topic (partition last_partition) of the last event applied to this row; '
    'events of that partition at or below it are skipped.';
comment on column skus.last_offset is
    'Offset in the skus topic (partition last_partition) of the last event applied to this row; '
    'events of that partition at or below it are skipped.';

create table order_payments (
    order_id   text        not null,
    payment_id text        not null,
    amount     bigint      not null check (amount >= 0),
    currency   text        not null check (currency ~ '^[A-Z]{3}$'),
    paid_at    timestamptz not null,
    primary key (order_id, payment_id)
);
comment on table order_payments is
    'Every payment of an order, projected from OrderPaid (once per payment_id); orders.paid_amount is their sum.';
