-- 002_views: views for people who read the projections (README: "Reading
-- projections with SQL"). They live in the projection schema, so that
-- `orderlog rebuild` swaps them with the tables they read.

set local search_path to orderlog;

create view revenue_per_sku_day as
select l.sku,
       (coalesce(o.placed_at, o.updated_at) at time zone 'UTC')::date as day,
       o.currency,
       sum(l.quantity)::bigint                  as units,
       sum(l.quantity::bigint * l.unit_price)   as revenue,
       count(distinct o.order_id)               as orders
from order_lines l
join orders o using (order_id)
where o.status <> 'cancelled'
group by l.sku, day, o.currency;
comment on view revenue_per_sku_day is
    'Units and revenue (minor units) per sku and UTC day, over orders that are not cancelled; the day is '
    'when the order was placed (or last updated, for external orders seen only through snapshots).';

create view open_refunds as
select r.refund_id, r.order_id, r.user_id, r.status, r.amount, r.currency, r.reason, r.requested_at,
       r.approved_at, now() - coalesce(r.requested_at, r.updated_at) as open_for
from refunds r
where r.status in ('requested', 'approved');
comment on view open_refunds is
    'Refunds requested or approved but not completed nor rejected, with how long they have been open.';

create view user_orders as
select o.user_id, o.order_id, o.source, o.platform, o.status, o.total_amount, o.paid_amount,
       o.refunded_amount, o.currency, o.placed_at, o.updated_at,
       (select count(*) from order_lines l where l.order_id = o.order_id) as lines
from orders o;
comment on view user_orders is
    'Every order with its totals and line count; filter by user_id for one user''s orders.';

create view stale_skus as
select s.sku, s.title, s.platform, s.stock, s.version, s.updated_at, now() - s.updated_at as age
from skus s
where s.removed_at is null and s.updated_at < now() - interval '1 day';
comment on view stale_skus is
    'Skus in the catalog whose last snapshot is more than a day old: the external catalog may have '
    'stopped syncing them.';
