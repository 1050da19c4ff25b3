-- 005: the sale projections. `orderlog project` now also reads the
-- sale-events topic (the decider's facts: BuyAccepted, BuyRejected,
-- HoldReleased, HoldConverted, StockChanged, PolicyChanged, CheckoutRejected)
-- and the compacted blacklist topic (BlacklistChanged), into the tables 001
-- created for them and two new ones (policies, checkout_rejections), plus
-- views for the flash-sale report.
--
-- Replays change nothing: every row remembers where (partition, offset) the
-- last fact applied to it was (last_partition, last_offset, as in 004). The
-- facts of a SKU live in one partition of sale-events (key = sku) and every
-- row here belongs to one SKU (or, for blacklist, one key of the blacklist
-- topic), so a fact of that partition at or below the row's offset was
-- applied already and is skipped. This matters most for the rows kept by
-- deltas (inventory, user_sku_totals), where applying a fact twice would
-- count its units twice.
--
-- Contradictions: the projector checks every fact against the rows it
-- touches, in log order, the way the decider's own state refuses it
-- (common/domain/sale.h, ol_sale_apply): a second decision for a request, a hold
-- that is unknown, already ended or does not match the fact, a BuyAccepted
-- the available stock cannot cover, a StockChanged under held + sold. Such a
-- fact can never apply: it goes to the dlq and changes nothing. So the check
-- inventory_within_total (held + sold <= total) holds after every legal fact
-- and is never reached by an illegal one; it stays as an oracle: if it ever
-- fires, the projector has a bug, and stopping with the error is right.

set local search_path to orderlog;

-- buy_decisions ------------------------------------------------------------------

alter table buy_decisions
    add column expires_at     timestamptz,
    add column last_partition int,
    add column last_offset    bigint;
comment on column buy_decisions.reason is
    'Rejected: why (blacklisted, level, limit, sold_out, unknown_sku); null when accepted.';
comment on column buy_decisions.message is
    'The message the shopper got (the original flash-sale API''s wording).';
comment on column buy_decisions.expires_at is
    'Accepted: when the hold placed expires unless converted; null when rejected.';
comment on column buy_decisions.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the decision. The same fact read again is '
    'skipped; another decision for the same request goes to the dlq.';

-- holds --------------------------------------------------------------------------

alter table holds rename column decided_at to placed_at;
alter table holds
    add column ended_at       timestamptz,
    add column last_partition int,
    add column last_offset    bigint,
    add constraint holds_status_fields_check check (
        (status = 'held') = (ended_at is null)
        and (status = 'released') = (release_reason is not null)
        and (status = 'converted') = (order_id is not null));
comment on table holds is
    'Cart holds, projected from the sale-events topic: BuyAccepted places one (held), HoldReleased '
    'releases it (expired or cancelled), HoldConverted converts it into an order. A hold ends once.';
comment on column holds.placed_at is 'When the BuyAccepted that placed the hold was decided.';
comment on column holds.ended_at is 'When it was released or converted; null while held.';
comment on column holds.release_reason is 'Released: expired or cancelled.';
comment on column holds.order_id is 'Converted: the order placed from it.';
comment on column holds.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the last fact applied to this hold; '
    'facts of that partition at or below it are skipped.';

-- inventory ----------------------------------------------------------------------

alter table inventory drop column available;
alter table inventory
    add column version        bigint not null default -1,
    add column cause          text,
    add column last_partition int,
    add column last_offset    bigint,
    add column available      bigint generated always as (total - held - sold) stored,
    add constraint inventory_within_total_check check (held + sold <= total);
comment on table inventory is
    'Stock per sku as the decider sees it, projected from the sale-events topic: StockChanged sets '
    'total, BuyAccepted adds to held, HoldReleased takes from held, HoldConverted moves from held to '
    'sold. available (total - held - sold) is what a new BuyRequested could still get. A row appears '
    'with the first StockChanged of its sku. held + sold <= total (no oversell) is checked: the projector '
    'sends a fact that would break it to the dlq before writing, so the check is a second line that never '
    'fires on the decider''s log.';
comment on column inventory.total is 'The sellable total of the last StockChanged.';
comment on column inventory.held is 'Units in open holds.';
comment on column inventory.sold is 'Units of holds converted into orders.';
comment on column inventory.version is
    'The SkuSynced version in force at the last StockChanged (-1: never synced, or a StockChanged of '
    'version 1, which did not carry it).';
comment on column inventory.cause is 'Why the total last changed: synced, adjusted or removed (off sale).';
comment on column inventory.updated_at is 'When the last fact applied to this row was decided.';
comment on column inventory.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the last fact applied to this row; '
    'facts of that partition at or below it are skipped.';

-- user_sku_totals ------------------------------------------------------------------

alter table user_sku_totals
    add column last_partition int,
    add column last_offset    bigint;
comment on column user_sku_totals.held is 'Units of the user''s open holds of this sku.';
comment on column user_sku_totals.bought is 'Units of the user''s holds of this sku converted into orders.';
comment on column user_sku_totals.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the last fact applied to this row; '
    'facts of that partition at or below it are skipped.';

-- blacklist --------------------------------------------------------------------------

alter table blacklist drop column action;
alter table blacklist
    add column last_partition int,
    add column last_offset    bigint;
comment on table blacklist is
    'The subjects (ip addresses, user ids) on the blacklist, projected from the compacted blacklist topic: '
    'BlacklistChanged add inserts or replaces the row of its subject, remove deletes it. A subject is '
    'blacklisted while until is null or in the future (view blacklist_active).';
comment on column blacklist.until is 'When the entry lapses; null: until removed.';
comment on column blacklist.changed_at is 'When the entry was last added.';
comment on column blacklist.last_offset is
    'Offset in the blacklist topic (partition last_partition) of the BlacklistChanged that added the row; '
    'an add of that partition at or below it is skipped. (A removal deletes the row and its position: '
    'replaying the topic from its start again adds and removes in turn and ends in the same state.)';

-- policies -----------------------------------------------------------------------------

create table policies (
    sku            text        primary key,
    min_level      int         not null check (min_level >= 0),
    default_limit  int         not null check (default_limit >= 0),
    level_limits   jsonb       not null default '[]',
    set_at         timestamptz not null,
    last_partition int,
    last_offset    bigint
);
comment on table policies is
    'The purchase policy in force per sku, projected from PolicyChanged on the sale-events topic (the '
    'PurchasePolicySet the decider applied).';
comment on column policies.min_level is 'Users below this level get "level" rejections.';
comment on column policies.default_limit is
    'Units a user may hold or buy of the sku when their level is not in level_limits; 0 = no limit.';
comment on column policies.level_limits is
    'Limits of the levels listed: [{"level": 3, "limit": 5}, ...], sorted by level; limit 0 = no limit.';
comment on column policies.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the PolicyChanged applied; facts of '
    'that partition at or below it are skipped.';

-- checkout_rejections --------------------------------------------------------------------

create table checkout_rejections (
    request_id     text        primary key,
    hold_id        text        not null,
    user_id        text        not null,
    sku            text        not null,
    op             text        not null check (op in ('checkout', 'cancel')),
    reason         text        not null
                               check (reason in ('unknown_hold', 'not_owner', 'released', 'converted', 'expired')),
    decided_at     timestamptz not null,
    last_partition int,
    last_offset    bigint
);
create index checkout_rejections_hold_id_idx on checkout_rejections (hold_id);
comment on table checkout_rejections is
    'CheckoutRequested and HoldCancelled commands that changed nothing, with the reason, projected from '
    'CheckoutRejected on the sale-events topic. One row per request id: the first refusal (a retried '
    'command refused again keeps the first row).';
comment on column checkout_rejections.op is 'checkout (CheckoutRequested) or cancel (HoldCancelled).';
comment on column checkout_rejections.last_offset is
    'Offset in the sale-events topic (partition last_partition) of the CheckoutRejected kept.';

-- views for the flash-sale report --------------------------------------------------------

create view sale_outcomes as
select d.sku, d.outcome, d.reason, count(*) as requests, sum(d.quantity)::bigint as units
from buy_decisions d
group by d.sku, d.outcome, d.reason;
comment on view sale_outcomes is
    'Decisions per sku, outcome and reason (null when accepted): how many requests, how many units asked.';

create view sale_by_sku as
select coalesce(i.sku, d.sku) as sku, i.total, i.sold, i.held, i.available,
       coalesce(d.accepted, 0) as accepted, coalesce(d.rejected, 0) as rejected,
       coalesce(d.sold_out, 0) as sold_out
from inventory i
full join (select sku,
                  count(*) filter (where outcome = 'accepted') as accepted,
                  count(*) filter (where outcome = 'rejected') as rejected,
                  count(*) filter (where reason = 'sold_out')  as sold_out
           from buy_decisions
           group by sku) d on d.sku = i.sku;
comment on view sale_by_sku is
    'One row per sku with stock (total, sold, held, available; null when the decider never had stock '
    'for it) and its requests: accepted, rejected, and of these rejected for lack of stock (sold_out).';

create view blacklist_active as
select b.subject_type, b.subject, b.reason, b.until, b.changed_at
from blacklist b
where b.until is null or b.until > now();
comment on view blacklist_active is
    'The blacklist entries in force now (until null or in the future).';
