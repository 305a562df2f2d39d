# 105_plain_insert_fallback.pl: a batch is first inserted without
# ON CONFLICT (src/writer.c, "Plain first"); a batch with duplicates or a
# refused row falls back to the ON CONFLICT statement with nothing of the
# first attempt left behind (SPEC §4: duplicates counted and ACKed,
# row-level errors dead-lettered).
#
# - A clean batch of 1000 new rows: all inserted, no duplicate.
# - One batch of 1000 (one MULTI/EXEC) holding 10 rows already in the table,
#   a row repeating an earlier row of the same batch, and a row that breaks
#   a second unique index of the user's: 988 inserted, 11 duplicates, 1 dead
#   letter naming that index, every id ACKed, one batch, no retry.
# - Another clean batch right after (the plain attempt now paused): all
#   1000 inserted.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $ts0 = 1_780_000_000_000;    # 2026-05-28, epoch milliseconds

sub xadd_cmd
{
	my ($device, $ts, $lat) = @_;
	return [
		'XADD', $stream, '*',
		device_id => $device,
		ts => $ts,
		lat => $lat,
		lon => '4.3'
	];
}

my $redis = RedisServer->new;
my $node = new_node('plain_first', redis => $redis,
	'processor.batch_size' => 1000);
$node->safe_psql(
	'postgres',
	target_table_ddl() . q{;
	CREATE UNIQUE INDEX positions_one_lat_per_device
		ON public.positions (device_id, lat);
	CREATE EXTENSION processor;
});
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'worker running');

# --- A clean batch.
$redis->pipeline([ 'MULTI' ],
	(map { xadd_cmd("a$_", $ts0 + $_, "52.$_") } 0 .. 999), [ 'EXEC' ]);
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1000'),
	'clean batch: 1000 rows');
ok(poll_until(sub { pending_count($redis) == 0 }), 'clean batch: ACKed');
is( $node->safe_psql(
		'postgres',
		'SELECT inserted, duplicates, dead_lettered, batches, db_retries
		   FROM processor.stats()'),
	'1000|0|0|1|0',
	'clean batch: one batch, all inserted');

# --- Duplicates of the table, a duplicate within the batch, and a row
# refused by the second unique index, in one batch.
my @cmds = map { xadd_cmd("b$_", $ts0 + $_, "53.$_") } 0 .. 999;
$cmds[$_] = xadd_cmd("a$_", $ts0 + $_, "52.$_") for 0 .. 9;
$cmds[500] = xadd_cmd('b499', $ts0 + 100_000, '53.499');
$cmds[900] = xadd_cmd('b899', $ts0 + 899, '53.899');
$redis->pipeline([ 'MULTI' ], @cmds, [ 'EXEC' ]);

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'mixed batch: one dead letter');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'mixed batch: every id ACKed');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM public.positions WHERE device_id LIKE 'b%'}),
	'988', 'mixed batch: the 988 new rows inserted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1988', 'mixed batch: the first batch\'s rows are untouched, once each');
like(
	$node->safe_psql(
		'postgres', 'SELECT error FROM public.positions_dead_letter'),
	qr/^duplicate key value violates unique constraint "positions_one_lat_per_device"$/,
	'mixed batch: the dead letter names the second unique index');
is( $node->safe_psql(
		'postgres',
		'SELECT entries_read, inserted, duplicates, dead_lettered, batches, db_retries
		   FROM processor.stats()'),
	'2000|1988|11|1|2|0',
	'mixed batch: one batch, 11 duplicates, no retry');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(DISTINCT stream_id) = count(*) FROM public.positions}),
	't', 'no stream id stored twice');

# --- After a failed plain attempt the next calls go straight to
# ON CONFLICT for a while: a clean batch still lands whole.
$redis->pipeline([ 'MULTI' ],
	(map { xadd_cmd("c$_", $ts0 + $_, "54.$_") } 0 .. 999), [ 'EXEC' ]);
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM public.positions WHERE device_id LIKE 'c%'},
		'1000'),
	'clean batch after the fallback: 1000 rows');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'clean batch after the fallback: ACKed');
is( $node->safe_psql(
		'postgres',
		'SELECT inserted, duplicates, dead_lettered, batches FROM processor.stats()'),
	'2988|11|1|3',
	'clean batch after the fallback: counted');

$node->stop;
$redis->stop;
done_testing();
