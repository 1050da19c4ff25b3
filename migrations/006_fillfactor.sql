-- 006: room on every page for the next version of a row.
--
-- The projector rewrites the same rows again and again (an order is placed,
-- re-synced, paid, shipped, refunded; a hold is opened and ended; a SKU's
-- inventory changes with every decision). At the default fillfactor (100) a
-- page is full after its first insert, so every later version of a row goes
-- to another page and gets new entries in every index of its table. With
-- room left on the page, PostgreSQL keeps the new version on the same page
-- and writes no index entry at all (a HOT update: no indexed column of these
-- rows ever changes). Measured with ops/bench/project: about 10% more
-- events/s. Pages written before this migration keep their layout; new ones
-- follow the setting. order_lines and order_payments are only inserted and
-- deleted, so they keep the default.

set local search_path to orderlog;

alter table orders set (fillfactor = 70);
alter table refunds set (fillfactor = 70);
alter table skus set (fillfactor = 70);
alter table inventory set (fillfactor = 70);
alter table holds set (fillfactor = 70);
alter table user_sku_totals set (fillfactor = 70);
alter table policies set (fillfactor = 70);
alter table blacklist set (fillfactor = 70);
alter table consumer_offsets set (fillfactor = 50);
