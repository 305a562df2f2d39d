# 070_non_utf8_database.pl: the worker refuses a database whose encoding is
# not UTF8 (SPEC: "the worker refuses any other with a clear error"), and
# does so once: it exits with code 0, which unregisters it, instead of being
# restarted every 5 s to log the same refusal again.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('latin1', redis => $redis);

$node->safe_psql('postgres',
	q{CREATE DATABASE latin1db ENCODING 'LATIN1' TEMPLATE template0
	  LC_COLLATE 'C' LC_CTYPE 'C'});
is($node->safe_psql('postgres',
		q{SELECT pg_encoding_to_char(encoding) FROM pg_database
		  WHERE datname = 'latin1db'}),
	'LATIN1', 'latin1db is LATIN1');

# processor.database needs a restart.
$node->append_conf('postgresql.conf', "processor.database = 'latin1db'\n");
$node->stop;
my $offset = -s $node->logfile;
$node->start;

my $refusal =
  qr/processor worker 1 cannot run in database "latin1db" with encoding "LATIN1"/;
ok($node->wait_for_log($refusal, $offset), 'the worker refuses latin1db');

# Longer than the 5 s restart interval: a restarted worker would say it again.
usleep(7_000_000);

my @lines = grep { /$refusal/ } split /\n/,
  slurp_file($node->logfile, $offset);
is(scalar @lines, 1, 'the refusal is logged exactly once in 7 s');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'processor'}),
	'0',
	'no processor worker is running');
is( scalar(grep { /processor worker 1 starting/ } split /\n/,
		slurp_file($node->logfile, $offset)),
	1,
	'the worker was started once and not restarted');
# log_min_messages is debug1 (new_node): the postmaster's DEBUG lines show.
like(
	slurp_file($node->logfile, $offset),
	qr/background worker "processor" \(PID \d+\) exited with exit code 0/,
	'it exited with code 0');
unlike(
	slurp_file($node->logfile, $offset),
	qr/background worker "processor" \(PID \d+\) exited with exit code [1-9]/,
	'not with another code (1 would restart it)');
is($redis->cli('EXISTS', 'telemetry:t'), '0',
	'it never reached Redis (no stream, no group created)');

$node->stop;
$redis->stop;

done_testing();
