# 100_row_level_isolation.pl: a row the database refuses does not block its
# batch (SPEC §4, row-level database errors).
#
# - A CHECK constraint rejects 1 row of 1000 published in one MULTI/EXEC
#   (so they arrive in one batch of processor.batch_size = 1000): 999 rows
#   inserted, 1 dead letter whose error names the constraint, nothing
#   pending, and the counters say so.  The same bad row alone in a batch of
#   one is dead-lettered too (a named constraint is never batch-level).
# - A BEFORE INSERT trigger that raises (plain RAISE EXCEPTION: SQLSTATE
#   P0001, neither class 22 nor 23, recognised as a trigger's error) for 1
#   row of 1000: the same; a duplicate in that batch is counted as one.
# - A partitioned target with no partition for any row of a batch: the
#   error is batch-level -- nothing dead-lettered, nothing ACKed, the worker
#   backs off with the error in processor.stats().last_error; once CREATE
#   TABLE ... PARTITION OF covers the rows, every one lands.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# 2026-05-28 and 2030-03-17, in epoch milliseconds.
my $ts_2026 = 1_780_000_000_000;
my $ts_2030 = 1_900_000_000_000;

# XADD commands for n positions of device "$prefix$i", at $ts0 + $i ms;
# the device of row $bad_index (if given) is $bad_device.
sub positions
{
	my ($prefix, $n, $ts0, $bad_index, $bad_device) = @_;
	my @cmds;
	for my $i (0 .. $n - 1)
	{
		my $device =
		  defined $bad_index && $i == $bad_index ? $bad_device : "$prefix$i";
		push @cmds,
		  [
			'XADD', $stream, '*',
			device_id => $device,
			ts => $ts0 + $i,
			lat => '52.1',
			lon => '4.3'
		  ];
	}
	return @cmds;
}

# Publish commands atomically: one MULTI/EXEC, so one XREADGROUP gets all.
sub publish_atomically
{
	my ($redis, @cmds) = @_;
	$redis->pipeline([ 'MULTI' ], @cmds, [ 'EXEC' ]);
}

my $redis = RedisServer->new;
my $node = new_node('isolation', redis => $redis,
	'processor.batch_size' => 1000);

$node->safe_psql(
	'postgres',
	target_table_ddl(extra =>
		  q{CONSTRAINT positions_no_banned_device CHECK (device_id <> 'banned')})
	  . q{;
	CREATE EXTENSION processor;
});
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'worker running');

# --- A CHECK constraint refuses 1 row of 1000.

publish_atomically($redis, positions('c', 1000, $ts_2026, 500, 'banned'));
ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'CHECK: one dead letter');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'999', 'CHECK: the 999 other rows inserted');
like(
	$node->safe_psql(
		'postgres', 'SELECT error FROM public.positions_dead_letter'),
	qr/^new row for relation "positions" violates check constraint "positions_no_banned_device"$/,
	'CHECK: the dead letter carries the database message naming the constraint');
is( $node->safe_psql(
		'postgres',
		q{SELECT fields->>'device_id', fields->>'ts', stream = 'telemetry:t'
		  FROM public.positions_dead_letter}),
	'banned|' . ($ts_2026 + 500) . '|t',
	'CHECK: the dead letter holds the entry\'s fields');
ok(poll_until(sub { pending_count($redis) == 0 }), 'CHECK: nothing pending');
is( $node->safe_psql(
		'postgres',
		'SELECT entries_read, inserted, duplicates, dead_lettered, batches, db_retries
		   FROM processor.stats()'),
	'1000|999|0|1|1|0',
	'CHECK: one batch, counted as 999 inserted and 1 dead-lettered, no retry');

# The same refusal alone in its batch: still row-level.
my $lone = $redis->xadd($stream, device_id => 'banned', ts => $ts_2026 + 5000,
	lat => '1', lon => '2');
ok( wait_for_rows(
		$node,
		"SELECT count(*) FROM public.positions_dead_letter WHERE stream_id = '$lone'",
		'1'),
	'CHECK: a refused row alone in its batch is dead-lettered too');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and ACKed');

# --- A trigger raises for 1 row of 1000.

$node->safe_psql(
	'postgres', q{
	ALTER TABLE public.positions DROP CONSTRAINT positions_no_banned_device;
	CREATE FUNCTION public.refuse_evil() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.device_id = 'evil' THEN
			RAISE EXCEPTION 'device % is not welcome', NEW.device_id;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_evil BEFORE INSERT ON public.positions
		FOR EACH ROW EXECUTE FUNCTION public.refuse_evil();
});
# Row 7 repeats a row of the first batch: a duplicate, not an insert.
my @cmds = positions('t', 1000, $ts_2026 + 10_000, 123, 'evil');
$cmds[7] = [
	'XADD', $stream, '*',
	device_id => 'c7',
	ts => $ts_2026 + 7,
	lat => '52.1',
	lon => '4.3'
];
publish_atomically($redis, @cmds);
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions_dead_letter
		  WHERE error = 'device evil is not welcome'},
		'1'),
	'trigger: one dead letter with the trigger\'s message');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM public.positions WHERE device_id LIKE 't%'}),
	'998', 'trigger: the 998 other new rows inserted');
ok(poll_until(sub { pending_count($redis) == 0 }), 'trigger: nothing pending');
is( $node->safe_psql(
		'postgres',
		'SELECT inserted, duplicates, dead_lettered, db_retries FROM processor.stats()'),
	'1997|1|3|0',
	'trigger: counters (the duplicate counted as one)');

# --- No partition for any row of a batch: batch-level.

$node->safe_psql(
	'postgres',
	target_table_ddl(name => 'public.pos_part', partition_by => 'RANGE (ts)')
	  . q{;
	CREATE TABLE public.pos_part_2026 PARTITION OF public.pos_part
		FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
	ALTER SYSTEM SET processor.target_table = 'public.pos_part';
	SELECT pg_reload_conf();
});
# The switch is in place once a 2026 row lands in the new target.
$redis->xadd($stream, device_id => 'switch', ts => $ts_2026, lat => '1',
	lon => '1');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.pos_part', '1'),
	'partitioned target in use');

publish_atomically($redis, positions('p', 100, $ts_2030));
ok( wait_for_rows(
		$node,
		q{SELECT last_error LIKE 'no partition of relation "pos_part" found for row%'
		  AND db_retries > 0 FROM processor.stats()},
		't'),
	'no partition: the worker backs off and says why');
ok(poll_until(sub { pending_count($redis) == 100 }),
	'no partition: the 100 entries stay pending (nothing ACKed)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'3', 'no partition: nothing dead-lettered');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.pos_part'),
	'1', 'no partition: nothing inserted');

$node->safe_psql(
	'postgres', q{
	CREATE TABLE public.pos_part_2030 PARTITION OF public.pos_part
		FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');
});
ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.pos_part_2030', '100'),
	'after CREATE TABLE ... PARTITION OF, every row lands');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and nothing is pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'3', 'still no new dead letter');

$node->stop;
$redis->stop;
done_testing();
