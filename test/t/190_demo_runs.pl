# 190_demo_runs.pl: the README's first command, the demo, runs end to end
# without a terminal and cleans up after itself.
#
# - scripts/demo.sh --no-install, DEMO_SECONDS=5, stdout not a terminal:
#   exits 0; prints snapshots (no screen-clearing escapes) with
#   processor.worker_stats (worker 1 running) and processor.device_state rows
#   of the simulator's devices; its final counts are non-zero and equal the
#   simulator's own summary (every position stored once, every invalid entry
#   dead-lettered, nothing pending); afterwards its PostgreSQL and Redis
#   ports are closed and its directory is gone.
# - Interrupted (SIGINT, as Ctrl-C sends) while the simulator runs: exits
#   130 within seconds, and again leaves no server and no directory behind.
#
# The demo needs the extension installed (make test installs it) and
# bench/loadgen, which make test builds before copying the tree; the demo
# builds it itself when it is missing.

use strict;
use warnings;

use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $srcdir = $ENV{TESTDIR} or die "TESTDIR is not set (run through make tapcheck)";
my $demo = "$srcdir/scripts/demo.sh";

# The demo's servers run as the test user; its directory goes to TMPDIR.
my $tmpdir = PostgreSQL::Test::Utils::tempdir('demo');
my %env = (
	%ENV,
	TMPDIR => $tmpdir,
	DEMO_SECONDS => 5,
	DEMO_DRAIN_TIMEOUT => 20);

# True if something accepts connections on 127.0.0.1:$port.
sub listening
{
	my ($port) = @_;
	my $s = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $port,
		Timeout => 2);
	return 0 unless $s;
	close $s;
	return 1;
}

# The ports and directory the demo announced, and checks that they are gone.
sub check_cleaned_up
{
	my ($out, $what) = @_;
	my ($redis_port) = $out =~ /starting redis-server on 127\.0\.0\.1:(\d+)/;
	my ($pg_port, $dir) =
	  $out =~ /starting PostgreSQL on 127\.0\.0\.1:(\d+) \((\S+)\/data\)/;
	ok(defined $redis_port && defined $pg_port,
		"$what: the demo announced its ports")
	  or return;
	ok(!listening($pg_port), "$what: its PostgreSQL ($pg_port) is stopped");
	ok(!listening($redis_port), "$what: its Redis ($redis_port) is stopped");
	ok(!-e $dir, "$what: its directory $dir is removed");
}

# --- 1. A full run ------------------------------------------------------------

local %ENV = %env;
my ($out, $err) = ('', '');
my $started = time;
my $ok = IPC::Run::run([ 'bash', $demo, '--no-install' ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));
my $status = $? >> 8;
note "demo took " . (time - $started) . " s";
is($status, 0, 'scripts/demo.sh --no-install exits 0')
  or diag "stdout:\n$out\nstderr:\n$err";

unlike($out, qr/\e\[/, 'no terminal escapes when stdout is not a terminal');
my @snapshots = $out =~ /^--- (\d+ s.*)$/mg;
cmp_ok(scalar @snapshots, '>=', 3, 'it printed a snapshot every second')
  or diag "stdout:\n$out";
like(
	$out,
	qr/^\s+1 \| running \| t\s+\|/m,
	'processor.worker_stats shows worker 1 running, connected to Redis');
like(
	$out,
	qr/^ 35630704\d{7} \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \|\s+-?\d+\.\d{5} \|\s+-?\d+\.\d{5} \|/m,
	'processor.device_state shows device rows with their positions');

my ($rows, $dead, $pending) = $out =~
  /^stored:\s+(\d+) positions in public\.positions, (\d+) dead letters in public\.positions_dead_letter, (\d+) pending$/m;
my ($sent, $expect_rows, $expect_dead) =
  $out =~ /^simulator: sent (\d+) entries: (\d+) positions, \d+ duplicates, (\d+) invalid$/m;
ok(defined $rows && defined $sent, 'the demo printed its summary')
  or diag "stdout:\n$out";
cmp_ok($sent // 0, '>=', 1000, 'the simulator sent at least 1000 entries');
cmp_ok($rows // 0, '>', 0, 'positions landed');
is($rows, $expect_rows, 'every position the simulator sent is stored once');
cmp_ok($dead // 0, '>', 0, 'invalid entries were dead-lettered');
is($dead, $expect_dead, 'every invalid entry is a dead letter');
is($pending, 0, 'nothing is left pending');
like(
	$out,
	qr/^public\.positions: \Q$rows\E rows    public\.positions_dead_letter: \Q$dead\E rows    stream pending: 0$/m,
	'the last screen shows the final counts');

check_cleaned_up($out, 'after the run');

# --- 2. Ctrl-C ----------------------------------------------------------------------

$ENV{DEMO_SECONDS} = 60;
($out, $err) = ('', '');
my $h = IPC::Run::start([ 'bash', $demo, '--no-install' ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
my $first_screen = eval {
	$h->pump until $out =~ /^--- \d+ s of 60, simulator running/m;
	1;
};
ok($first_screen, 'the interrupted run shows its first screen')
  or diag "stdout:\n$out\nstderr:\n$err";
$started = time;
$h->signal('INT');
eval { $h->finish; };
my $seconds = time - $started;
is($h->result(0), 130, 'SIGINT ends the demo with exit status 130');
cmp_ok($seconds, '<=', 15, "it stops within seconds ($seconds s)");
check_cleaned_up($out, 'after SIGINT');

done_testing();
