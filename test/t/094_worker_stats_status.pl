
# 094_worker_stats_status.pl: processor.stats() tells what the worker is
# doing (SPEC §6): waiting_for_extension until CREATE EXTENSION, running,
# paused with processor.enabled = off and running again when it is back on;
# backoff or connecting with redis_connected false and last_error set while
# Redis is down, and redis_reconnects counting when it comes back; and a
# terminated worker shows "stopped" with a NULL pid until it is restarted.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('status', redis => $redis);

# The worker's database is "postgres"; shared memory is the same in every
# database, so another one can watch it wait.
$node->safe_psql('postgres', 'CREATE DATABASE watch');
$node->safe_psql('watch', 'CREATE EXTENSION processor');
ok( wait_for_rows(
		$node,
		'SELECT worker, status, pid IS NOT NULL FROM processor.stats()',
		'1|waiting_for_extension|t', dbname => 'watch'),
	'waiting_for_extension before CREATE EXTENSION in its database');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( wait_for_rows(
		$node, 'SELECT status, redis_connected FROM processor.stats()',
		'running|t'),
	'running once the extension exists');
is( $node->safe_psql(
		'postgres', q{
	SELECT s.pid = a.pid, s.consumer LIKE '%-1'
	  FROM processor.stats() s
	  JOIN pg_stat_activity a ON a.backend_type = 'processor'}),
	't|t',
	'pid is the worker\'s, consumer is suffixed with the worker number');

# Pause and resume.
$node->append_conf('postgresql.conf', "processor.enabled = off\n");
$node->reload;
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'paused'),
	'paused with processor.enabled = off');
$node->append_conf('postgresql.conf', "processor.enabled = on\n");
$node->reload;
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'running again with processor.enabled = on');

# Redis down, then back.
$redis->stop;
ok( wait_for_rows(
		$node, q{
	SELECT status IN ('backoff', 'connecting'), redis_connected,
	       last_error IS NOT NULL, last_error_at IS NOT NULL
	  FROM processor.stats()}, 't|f|t|t'),
	'Redis down: backoff or connecting, not connected, last_error set');
$redis->start;
ok( wait_for_rows(
		$node, q{
	SELECT status, redis_connected, redis_reconnects >= 1
	  FROM processor.stats()}, 'running|t|t'),
	'Redis back: running, connected, the reconnect counted');

# A terminated worker is "stopped" with a NULL pid while it is down (the
# restart interval is 5 s), then comes back with another pid.
my $pid = $node->safe_psql('postgres', 'SELECT pid FROM processor.stats()');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( wait_for_rows(
		$node, 'SELECT status, pid IS NULL, redis_connected FROM processor.stats()',
		'stopped|t|f'),
	'terminated worker: stopped, pid NULL');
ok( wait_for_rows(
		$node,
		"SELECT status, pid IS NOT NULL AND pid <> $pid FROM processor.stats()",
		'running|t'),
	'restarted worker: running with a new pid');

$node->stop;
$redis->stop;
done_testing();
