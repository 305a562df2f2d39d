
# 045_reload_keeps_connection.pl: a reload that changes nothing about Redis
# is served during XREADGROUP ... BLOCK without dropping the connection
# (SPEC §3: "Redis settings changed -> reconnect", and only then), and an
# entry that arrives while the reload is being served still lands with one
# delivery.  A reload that changes where to connect reconnects.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node(
	'reload',
	redis => $redis,
	'processor.block_time' => '5s');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
$redis->xadd('telemetry:t', device_id => 'r1', ts => '1000', lat => '1',
	lon => '2');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'first entry stored');

# Redis's id for the worker's connection: it changes on a reconnect.
sub reader_client_id
{
	foreach my $line (split /\n/, $redis->cli('CLIENT', 'LIST'))
	{
		return $1 if $line =~ /\bid=(\d+)\b.*\bcmd=xreadgroup\b/;
	}
	return '';
}

ok(poll_until(sub { reader_client_id() ne '' }),
	'the worker is blocked in XREADGROUP');
my $client = reader_client_id();
my $connects = () = slurp_file($node->logfile) =~ /connected to Redis/g;

# A reload that changes nothing Redis-related, during the block.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET work_mem = '8MB'; SELECT pg_reload_conf();");
ok( $node->poll_query_until('postgres', 'SHOW work_mem', '8MB'),
	'reload served');
usleep(300_000);

$redis->xadd('telemetry:t', device_id => 'r2', ts => '2000', lat => '1',
	lon => '2');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '2'),
	'entry published after the reload stored');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is(reader_client_id(), $client,
	'same Redis connection after a reload that changed no Redis setting');
my $connects_after = () = slurp_file($node->logfile) =~ /connected to Redis/g;
is($connects_after, $connects, 'no reconnect logged');

# The entry came in on the resumed read: delivered once, never from history.
like(
	$node->safe_psql(
		'postgres', "SELECT count(*) FROM processor.stats() WHERE redis_reconnects = 0"),
	qr/^1$/,
	'stats count no reconnect');

# Changing where to connect (here the logical database) does reconnect.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET processor.redis_db = 1; SELECT pg_reload_conf();");
ok( poll_until(
		sub {
			my $n = () = slurp_file($node->logfile) =~ /connected to Redis/g;
			return $n > $connects;
		}),
	'a changed Redis setting reconnects');

$node->stop;
$redis->stop;

done_testing();
