-- 003: order_lines loses its foreign key to orders.
--
-- The projector is the only writer of both tables and writes an order before
-- its lines in the same transaction, so the key never caught anything; its
-- per-row check cost about 8 µs per line (a third of the projection's time
-- in the database on ops/bench/project). Reading is unchanged: join on order_id.

set local search_path to orderlog;

alter table order_lines drop constraint if exists order_lines_order_id_fkey;
comment on table order_lines is
    'The lines of each order, numbered from 1 in event order, projected from the lines of OrderPlaced '
    'and OrderSynced (a newer snapshot replaces all lines of its order). No foreign key: the projector '
    'writes an order before its lines in the same transaction.';
