# 230_dead_letter_off_parks.pl: with processor.dead_letter = off, an invalid
# entry is logged and left pending, never acknowledged, never re-claimed by
# the worker itself and kept from other consumers (SPEC §4, invalid
# entries).
#
# An invalid entry (no ts) and a valid neighbour arrive in one batch, with
# processor.claim_min_idle = 1s and claim_interval = 1s:
#
# - the server log says "invalid entry <id> left pending: missing key: ts";
# - the neighbour lands; there is no dead letter;
# - for at least 3 x claim_min_idle, the invalid entry stays pending on the
#   worker's consumer with delivery count 1 (the worker does not claim or
#   re-read it) and idle below claim_min_idle (it keeps it fresh), and an
#   XAUTOCLAIM by another consumer claims nothing;
#
# then ALTER SYSTEM SET processor.dead_letter = on and a reload: the entry
# becomes a dead letter "missing key: ts" and nothing is pending.
#
# Finally, dead_letter = off again: a parked invalid entry whose delivery
# count is past processor.max_deliveries (10; raised to 20 with XCLAIM
# RETRYCOUNT, then re-read from history after a restart) stays parked:
# max_deliveries does not apply to invalid entries with dead letters off.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $min_idle_ms = 1000;

my $redis = RedisServer->new;
my $node = new_node(
	'parks',
	redis => $redis,
	'processor.dead_letter' => 'off',
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');
my $consumer = worker_stat($node, 'consumer');

# The invalid entry and its valid neighbour in one batch.
$redis->pipeline(
	['MULTI'],
	[ 'XADD', $stream, '*', 'device_id', 'bad', 'lat', '1', 'lon', '2' ],
	[
		'XADD', $stream, '*', 'device_id', 'good', 'ts', '1767225600000',
		'lat', '1', 'lon', '2'
	],
	['EXEC']);
my ($id_bad, $id_good) = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'the valid neighbour landed');
is($node->safe_psql('postgres', 'SELECT stream_id FROM public.positions'),
	$id_good, '... with its id');
ok( poll_until(
		sub {
			$node->log_contains(
				qr/invalid entry \Q$id_bad\E left pending: missing key: ts/);
		}),
	'logged: "invalid entry <id> left pending: missing key: ts"');

# Watch for 3.5 x claim_min_idle, on one Redis connection.
# Another consumer tries to take whatever is idle for claim_min_idle.
my $w = sample_pending(
	$redis,
	stream => $stream,
	seconds => 3.5 * $min_idle_ms / 1000,
	thief_min_idle => $min_idle_ms);
note "$w->{samples} XPENDING samples, max idle $w->{max_idle} ms";

is_deeply($w->{seen}, { "$id_bad:$consumer" => $w->{samples} },
	"only the invalid entry pending, always on the worker's consumer ($consumer)");
is($w->{max_count}, 1,
	'delivery count stayed 1: not re-read or re-claimed by the worker');
cmp_ok($w->{max_idle}, '<', $min_idle_ms,
	'idle time stayed below claim_min_idle (kept fresh)');
is($w->{stolen}, '', 'XAUTOCLAIM by another consumer claimed nothing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(worker_stat($node, 'claimed'), '0', 'the worker claimed nothing');
is(pending_count($redis), 1, 'one entry pending');

# --- Dead letters on again.

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.dead_letter = on; SELECT pg_reload_conf()});

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'after dead_letter = on, the parked entry is dead-lettered');
is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, error, fields->>'device_id'
		  FROM public.positions_dead_letter}),
	"$stream|$id_bad|missing key: ts|bad",
	'dead letter: its id, "missing key: ts", its fields');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1', 'still one position');

# --- Dead letters off again; a parked entry past max_deliveries.

# (a restart rather than a reload, so that the worker surely has it)
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.dead_letter = off});
$node->restart;
ok( worker_running($node),
	'dead_letter off again, worker running');
my $id_poison = $redis->xadd($stream, device_id => 'bad2', lat => '1',
	lon => '2');
ok( poll_until(
		sub {
			$node->log_contains(
				qr/invalid entry \Q$id_poison\E left pending: missing key: ts/);
		}),
	'a second invalid entry is parked');
is( $redis->cli(
		'XCLAIM', $stream, 'processor', $consumer, '0', $id_poison,
		'RETRYCOUNT', '20', 'JUSTID'),
	$id_poison,
	'its delivery count raised to 20 (max_deliveries is 10)');

my $log_offset = -s $node->logfile;
$node->restart;
ok( poll_until(
		sub {
			$node->log_contains(
				qr/invalid entry \Q$id_poison\E left pending: missing key: ts/,
				$log_offset);
		}),
	'after a restart, history re-reads it and parks it again');
my $p = pending_entries($redis, $stream);
cmp_ok($p->{$id_poison}{count}, '>', 20,
	'its delivery count is past max_deliveries');
is($p->{$id_poison}{consumer}, $consumer, '... and it is still ours');
is(pending_count($redis), 1, 'it is the only entry pending');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM public.positions_dead_letter WHERE stream_id = '$id_poison'"),
	'0', 'it was not dead-lettered');

$node->stop;
$redis->stop;

done_testing();
