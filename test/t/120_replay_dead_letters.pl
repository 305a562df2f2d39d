# 120_replay_dead_letters.pl: processor.replay_dead_letters(since) (SPEC §6)
# moves dead letters that are valid now into the target table.
#
# - A position refused by a CHECK constraint is dead-lettered; replayed
#   while the constraint is still there, it stays (replayed 0).  After DROP
#   CONSTRAINT, replay_dead_letters() returns (1, 2): the row is in the
#   target with its stream_id, its dead letter gone; the entry that the
#   codec refuses (lat out of range) and a dead letter without fields stay.
# - since filters on failed_at: a window in the future replays nothing and
#   counts nothing.
# - A non-superuser (even with USAGE on the schema) gets permission denied.
# - Without shared_preload_libraries it raises SQLSTATE 55000.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

my $redis = RedisServer->new;
my $node = new_node('replay', redis => $redis);

$node->safe_psql(
	'postgres',
	target_table_ddl(extra => 'CONSTRAINT positions_lat_not_13 CHECK (lat <> 13)')
	  . q{;
	CREATE EXTENSION processor;
});

my $refused = $redis->xadd($stream, payload =>
	  '{"device_id":"d13","ts":"2026-11-26T10:00:00Z","lat":13,"lon":4.5,"attributes":{"a":1}}'
);
my $invalid =
  $redis->xadd($stream, device_id => 'd91', ts => '1000', lat => '91', lon => '0');
# Duplicate keys: jsonb keeps only one, so this one must never be replayed.
my $dup = $redis->xadd($stream, device_id => 'dup', ts => '1000', lat => '1',
	lon => '1', lat => '2');
my $valid =
  $redis->xadd($stream, device_id => 'ok', ts => '1000', lat => '1', lon => '1');
ok( wait_for_rows(
		$node,
		'SELECT (SELECT count(*) FROM public.positions),
		        (SELECT count(*) FROM public.positions_dead_letter)',
		'1|3'),
	'one position, three dead letters');
like(
	$node->safe_psql(
		'postgres',
		"SELECT error FROM public.positions_dead_letter WHERE stream_id = '$refused'"),
	qr/violates check constraint "positions_lat_not_13"/,
	'the CHECK refusal is a dead letter');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

# A dead letter without fields (an entry deleted from the stream).
$node->safe_psql(
	'postgres', q{
	INSERT INTO public.positions_dead_letter (stream, stream_id, fields, error)
	VALUES ('telemetry:t', '1-1', NULL, 'entry no longer in stream')});

# --- Permissions.

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	GRANT USAGE ON SCHEMA processor TO alice;
});
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	'SELECT * FROM processor.replay_dead_letters()',
	extra_params => [ '-U', 'alice' ]);
isnt($ret, 0, 'a non-superuser cannot replay');
like($stderr, qr/permission denied for function replay_dead_letters/,
	'permission denied');

# --- Replay.

is($node->safe_psql('postgres',
		'SELECT * FROM processor.replay_dead_letters()'),
	'0|4', 'constraint still there: nothing replayed, 4 remain');
like(
	$node->safe_psql(
		'postgres',
		"SELECT error FROM public.positions_dead_letter WHERE stream_id = '$refused'"),
	qr/violates check constraint "positions_lat_not_13"/,
	'the refused dead letter stays as it was');

$node->safe_psql('postgres',
	'ALTER TABLE public.positions DROP CONSTRAINT positions_lat_not_13');
is( $node->safe_psql(
		'postgres',
		q{SELECT * FROM processor.replay_dead_letters(now() + interval '1 hour')}),
	'0|0', 'since in the future: nothing replayed, nothing in the window');
is($node->safe_psql('postgres',
		'SELECT replayed, remaining FROM processor.replay_dead_letters(since => NULL)'),
	'1|3', 'after DROP CONSTRAINT: 1 replayed, 3 remain (duplicate keys never)');
is( $node->safe_psql(
		'postgres',
		q{SELECT device_id, lat, lon, attributes, stream_id
		  FROM public.positions WHERE device_id = 'd13'}),
	qq{d13|13|4.5|{"a": 1}|$refused},
	'the replayed row is in the target, with its stream_id');
is( $node->safe_psql(
		'postgres',
		'SELECT stream_id FROM public.positions_dead_letter ORDER BY stream_id'),
	join("\n", sort ('1-1', $invalid, $dup)),
	'its dead letter is gone; the invalid one, the duplicate-key one and the one without fields stay');
is($node->safe_psql('postgres',
		'SELECT * FROM processor.replay_dead_letters()'),
	'0|3', 'a second replay finds nothing to do');

$node->stop;

# --- Without shared_preload_libraries: SQLSTATE 55000.

my $plain = PostgreSQL::Test::Cluster->new('replay_nopreload');
$plain->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION processor');
($ret, $stdout, $stderr) = $plain->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM processor.replay_dead_letters()");
like(
	$stderr,
	qr/ERROR:  55000: processor must be loaded via shared_preload_libraries/,
	'without preload: SQLSTATE 55000');
$plain->stop;

$redis->stop;
done_testing();
