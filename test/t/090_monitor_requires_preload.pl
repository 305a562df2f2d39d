
# 090_monitor_requires_preload.pl: without processor in
# shared_preload_libraries, CREATE EXTENSION still works, and every function
# that needs shared memory (devices, device, stats, state_info, reset_stats,
# and the two views over them) raises SQLSTATE 55000 "processor must be
# loaded via shared_preload_libraries" instead of crashing the server.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'processor is not preloaded');
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

my @calls = (
	'SELECT * FROM processor.devices()',
	q{SELECT * FROM processor.device('356307042441013')},
	'SELECT * FROM processor.stats()',
	'SELECT * FROM processor.state_info()',
	'SELECT processor.reset_stats()',
	'SELECT * FROM processor.device_state',
	'SELECT * FROM processor.worker_stats');

foreach my $sql (@calls)
{
	# VERBOSITY verbose prints the SQLSTATE: "ERROR:  55000: ..."
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, "$sql fails");
	like(
		$stderr,
		qr/ERROR:  55000: processor must be loaded via shared_preload_libraries/,
		"$sql: SQLSTATE 55000 and the message of SPEC §6");
}

# The server survived every call (a crash would restart it and log it).
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still answers');
unlike(
	slurp_file($node->logfile),
	qr/terminated by signal|server process .* was terminated/,
	'no backend crashed');

$node->stop;
done_testing();
