-- 001_init: schema "orderlog" and the read models of EVENTS.md ("Read models").
--
-- Projections own these tables: rows come only from events (orderlog project),
-- never from people. Conventions: ids are text; money is bigint in minor units
-- next to an ISO 4217 currency; quantities are int; times are timestamptz.
-- Snapshot events (SkuSynced, OrderSynced, AfterSaleSynced) carry a version per
-- entity, kept in a "version" column: a snapshot is applied only when newer.
--
-- Applied by `orderlog migrate` in one transaction with its schema_migrations row:
-- no BEGIN/COMMIT here. Names below are unqualified and land in schema orderlog
-- through the search_path, which SET LOCAL resets at the end of the transaction.

create schema if not exists orderlog;
set local search_path to orderlog;

-- orders ---------------------------------------------------------------------

create table orders (
    order_id        text        primary key,
    user_id         text        not null,
    source          text        not null check (source in ('flash_sale', 'external')),
    platform        text,                                   -- external orders: where they come from
    shop_id         text,
    status          text        not null check (status in ('placed', 'paid', 'shipped', 'completed', 'cancelled')),
    total_amount    bigint      not null check (total_amount >= 0),
    currency        text        not null check (currency ~ '^[A-Z]{3}$'),
    paid_amount     bigint      not null default 0 check (paid_amount >= 0),
    refunded_amount bigint      not null default 0 check (refunded_amount >= 0),
    payment_id      text,
    carrier         text,
    tracking_no     text,
    cancel_reason   text,
    placed_at       timestamptz,                            -- null for an external order seen only via OrderSynced
    paid_at         timestamptz,
    shipped_at      timestamptz,
    cancelled_at    timestamptz,
    version         bigint,                                 -- of the last OrderSynced applied; null if none
    updated_at      timestamptz not null
);
create index orders_user_id_idx on orders (user_id);
comment on table orders is
    'One row per order, projected from the orders topic: OrderPlaced creates it (flash-sale orders come '
    'from a checkout), OrderPaid, OrderCancelled and OrderShipped update it, OrderSynced upserts orders of '
    'external platforms (applied only when its version is newer). refunded_amount follows '
    'RefundCompleted on the after-sales topic.';
comment on column orders.version is
    'Version of the last OrderSynced snapshot applied; a snapshot with a version not above it is ignored.';

create table order_lines (
    order_id   text   not null references orders (order_id) on delete cascade,
    line_no    int    not null check (line_no >= 1),
    sku        text   not null,
    quantity   int    not null check (quantity >= 1),
    unit_price bigint not null check (unit_price >= 0),
    primary key (order_id, line_no)
);
comment on table order_lines is
    'The lines of each order, numbered from 1 in event order, projected from the lines of OrderPlaced '
    'and OrderSynced (a newer snapshot replaces all lines of its order).';

-- after-sales ----------------------------------------------------------------

-- No foreign key to orders: refunds come from another topic and may be
-- projected before their order.
create table refunds (
    refund_id     text        primary key,
    order_id      text        not null,
    user_id       text,
    platform      text,
    status        text        not null check (status in ('requested', 'approved', 'rejected', 'completed')),
    amount        bigint      not null check (amount >= 0),
    currency      text        not null check (currency ~ '^[A-Z]{3}$'),
    reason        text,
    reject_reason text,
    requested_at  timestamptz,                              -- null when first seen via AfterSaleSynced
    approved_at   timestamptz,
    rejected_at   timestamptz,
    completed_at  timestamptz,
    version       bigint,                                   -- of the last AfterSaleSynced applied; null if none
    updated_at    timestamptz not null
);
create index refunds_order_id_idx on refunds (order_id);
comment on table refunds is
    'One row per refund, projected from the after-sales topic: RefundRequested creates it, '
    'RefundApproved, RefundRejected and RefundCompleted update it, AfterSaleSynced upserts refunds of '
    'external platforms (applied only when its version is newer).';
comment on column refunds.version is
    'Version of the last AfterSaleSynced snapshot applied; a snapshot with a version not above it is ignored.';

-- catalog and stock ------------------------------------------------------------

create table skus (
    sku        text        primary key,
    platform   text        not null,
    title      text        not null,
    price      bigint      not null check (price >= 0),
    currency   text        not null check (currency ~ '^[A-Z]{3}$'),
    stock      bigint      not null check (stock >= 0),
    version    bigint      not null,
    removed_at timestamptz,                                 -- set by SkuRemoved
    updated_at timestamptz not null
);
comment on table skus is
    'The catalog, projected from SkuSynced on the skus topic (applied only when its version is newer) '
    'and SkuRemoved (sets removed_at).';
comment on column skus.version is
    'Version of the last SkuSynced snapshot applied; a snapshot with a version not above it is ignored.';

create table inventory (
    sku        text        primary key,
    total      bigint      not null default 0 check (total >= 0),
    held       bigint      not null default 0 check (held >= 0),
    sold       bigint      not null default 0 check (sold >= 0),
    available  bigint      not null default 0,
    updated_at timestamptz not null
);
comment on table inventory is
    'Stock per sku as the decider sees it, projected from the sale-events topic: StockChanged sets '
    'total, BuyAccepted/HoldReleased/HoldConverted move units between held and sold; available is '
    'what a new BuyRequested could still get.';

-- sale decisions -----------------------------------------------------------------

create table holds (
    hold_id        text        primary key,
    request_id     text,
    user_id        text        not null,
    sku            text        not null,
    quantity       int         not null check (quantity >= 1),
    status         text        not null check (status in ('held', 'released', 'converted')),
    release_reason text        check (release_reason in ('expired', 'cancelled')),
    order_id       text,                                    -- set by HoldConverted
    expires_at     timestamptz not null,
    decided_at     timestamptz not null,
    updated_at     timestamptz not null
);
create index holds_sku_status_idx on holds (sku, status);
comment on table holds is
    'Cart holds, projected from the sale-events topic: BuyAccepted creates one (held), HoldReleased '
    'releases it (expired or cancelled), HoldConverted converts it into an order.';

create table buy_decisions (
    request_id text        primary key,
    user_id    text        not null,
    sku        text        not null,
    quantity   int         not null check (quantity >= 1),
    outcome    text        not null check (outcome in ('accepted', 'rejected')),
    reason     text        check (reason in ('blacklisted', 'level', 'limit', 'sold_out', 'unknown_sku')),
    message    text,
    hold_id    text,                                        -- accepted: the hold placed
    decided_at timestamptz not null,
    check ((outcome = 'rejected') = (reason is not null))
);
comment on table buy_decisions is
    'Every decision on a BuyRequested with its reason, projected from BuyAccepted (accepted) and '
    'BuyRejected (rejected, with the reason code) on the sale-events topic; serves GET /buy/<requestID>.';

create table user_sku_totals (
    user_id    text        not null,
    sku        text        not null,
    held       int         not null default 0 check (held >= 0),
    bought     int         not null default 0 check (bought >= 0),
    updated_at timestamptz not null,
    primary key (user_id, sku)
);
comment on table user_sku_totals is
    'Units each user holds and has bought per sku (what purchase limits count), projected from '
    'BuyAccepted, HoldReleased and HoldConverted on the sale-events topic.';

-- blacklist ----------------------------------------------------------------------

create table blacklist (
    subject_type text        not null check (subject_type in ('ip', 'user')),
    subject      text        not null,
    action       text        not null check (action in ('add', 'remove')),
    reason       text        not null check (reason in ('manual', 'rate')),
    until        timestamptz,                               -- null: until removed
    changed_at   timestamptz not null,
    primary key (subject_type, subject)
);
comment on table blacklist is
    'The latest BlacklistChanged per subject (ip address or user id), projected from the compacted '
    'blacklist topic; a subject is blacklisted while action = ''add'' and until is null or in the future.';

-- consumer offsets -----------------------------------------------------------------

create table consumer_offsets (
    group_id    text        not null,
    topic       text        not null,
    partition   int         not null check (partition >= 0),
    next_offset bigint      not null check (next_offset >= 0),
    updated_at  timestamptz not null default now(),
    primary key (group_id, topic, partition)
);
comment on table consumer_offsets is
    'Next Kafka offset to consume per consumer group and partition, written by the consumer runtime in '
    'the same transaction as the rows of the batch it covers (exactly-once projection); on assignment '
    'the consumer seeks here. It lives in this schema so that a rebuild swaps it with the tables.';
