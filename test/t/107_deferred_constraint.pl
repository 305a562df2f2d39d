# 107_deferred_constraint.pl: a row refused by a deferred constraint is
# isolated like any other row-level error (SPEC §4).
#
# The target has a DEFERRABLE INITIALLY DEFERRED foreign key on device_id.
# Checked at COMMIT, outside the subtransactions that isolate rows, one
# unknown device would fail its whole batch at every retry.  The worker
# checks constraints at the end of each INSERT instead: in a batch of
# three (one MULTI/EXEC), the unknown device is dead-lettered with the
# database's message naming the constraint, the two known ones land, no
# retry, nothing pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $redis = RedisServer->new;
my $node = new_node('deferred', redis => $redis);
$node->safe_psql(
	'postgres', q{
	CREATE TABLE public.known_devices (device_id text PRIMARY KEY);
	INSERT INTO public.known_devices VALUES ('k1'), ('k2');
} . target_table_ddl(
		extra => q{CONSTRAINT positions_known_device FOREIGN KEY (device_id)
		REFERENCES public.known_devices DEFERRABLE INITIALLY DEFERRED})
	  . '; CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');

$redis->pipeline(
	['MULTI'],
	(
		map {
			[
				'XADD', $stream, '*', device_id => $_->[0],
				ts => $_->[1], lat => '1', lon => '2'
			]
		} ([ 'k1', '1000' ], [ 'stranger', '1001' ], [ 'k2', '1002' ])
	),
	['EXEC']);

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'the unknown device is dead-lettered');
like(
	$node->safe_psql(
		'postgres',
		q{SELECT fields->>'device_id' || ': ' || error FROM public.positions_dead_letter}),
	qr/^stranger: insert or update on table "positions" violates foreign key constraint "positions_known_device"$/,
	'... with the message naming the deferred constraint');
is( $node->safe_psql(
		'postgres', 'SELECT string_agg(device_id, \',\' ORDER BY device_id) FROM public.positions'),
	'k1,k2', 'the known devices landed');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is(worker_stat($node, 'batches || \'|\' || db_retries'), '1|0',
	'one batch, no retry');

$node->stop;
$redis->stop;
done_testing();
