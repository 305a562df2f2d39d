
# 180_stunnel_tls.pl: the README's TLS recipe carries entries (SPEC §9;
# issue 6).  hiredis 0.14 has no TLS, so the worker talks plain RESP to a
# local stunnel in client mode, which verifies Redis's certificate and
# speaks TLS to "redis-server --port 0 --tls-port ...".
#
# - Redis listens on a TLS port only: a plain connection to it fails;
# - processor.redis_port = stunnel's local port: JSON and flat entries land,
#   nothing is pending, the worker's connection arrives on Redis's TLS port,
#   and stunnel logs that it verified the certificate;
# - stunnel stopped and started again: the worker reconnects through it;
# - a stunnel that trusts another CA refuses the connection (the
#   verifyChain/CAfile lines of the recipe are what make it secure).
#
# Certificates are self-signed, made with openssl in the test's temporary
# directory.  stunnel and redis-server are children of the test, stopped
# by pid.

use strict;
use warnings;

use File::Spec;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $dir = File::Spec->rel2abs(PostgreSQL::Test::Utils::tempdir('tls'));
my ($stunnel_bin) =
  grep { -x } map { ("$_/stunnel4", "$_/stunnel") } split /:/, $ENV{PATH};
# scripts/install-deps.sh installs it: a missing one is a failure.
BAIL_OUT('stunnel4 is not installed (scripts/install-deps.sh)')
  unless defined $stunnel_bin;

# A self-signed certificate for 127.0.0.1 / localhost.
sub make_cert
{
	my ($name) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[
			'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
			'-keyout', "$dir/$name.key", '-out', "$dir/$name.crt",
			'-days', '2', '-subj', '/CN=localhost',
			'-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
		],
		'>', \$out, '2>', \$err);
	die "openssl req failed: $err" unless $ok;
	chmod 0600, "$dir/$name.key";
	return ("$dir/$name.crt", "$dir/$name.key");
}
my ($cert, $key) = make_cert('redis');
my ($other_ca) = make_cert('other');

# --- Redis on a TLS port only.  Its own redis-cli (RedisServer's PING at
# start, cli, pending_count) speaks TLS too.

package TlsRedisServer
{
	use parent -norequire, 'RedisServer';

	sub _run_cli
	{
		my ($self, $args, $input) = @_;
		return $self->SUPER::_run_cli(
			[ '--tls', '--cacert', $self->{cacert}, @$args ], $input);
	}
}

my $tls_port = PostgreSQL::Test::Cluster::get_free_port();
my $redis = TlsRedisServer->new(
	port => $tls_port,
	start => 0,
	args => [
		'--port' => '0',
		'--tls-port' => $tls_port,
		'--tls-cert-file' => $cert,
		'--tls-key-file' => $key,
		'--tls-ca-cert-file' => $cert,
		'--tls-auth-clients' => 'no',
	]);
$redis->{cacert} = $cert;
$redis->start;

{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'redis-cli', '-h', '127.0.0.1', '-p', $tls_port, 'PING' ],
		'<', \'', '>', \$out, '2>', \$err);
	isnt($out, "PONG\n", 'Redis speaks only TLS: a plain PING gets no PONG');
}

# --- stunnel in client mode, in the foreground, as our child.

my %stunnels;    # pid => 1, for the END block

sub start_stunnel
{
	my ($name, $accept_port, $cafile) = @_;
	my $conf = "$dir/$name.conf";
	my $log = "$PostgreSQL::Test::Utils::log_path/180_stunnel_$name.log";

	open my $fh, '>', $conf or die "could not write $conf: $!";
	print $fh <<"EOF";
foreground = yes
pid = $dir/$name.pid
output = $log
debug = notice

[redis]
client = yes
accept = 127.0.0.1:$accept_port
connect = 127.0.0.1:$tls_port
verifyChain = yes
CAfile = $cafile
checkIP = 127.0.0.1
EOF
	close $fh;

	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', '/dev/null');
		open(STDERR, '>&', \*STDOUT);
		exec { $stunnel_bin } $stunnel_bin, $conf
		  or POSIX::_exit(127);
	}
	$stunnels{$pid} = 1;
	my $listening = poll_until(
		sub {
			die "stunnel exited at start (see $log)\n"
			  if waitpid($pid, WNOHANG) == $pid;
			return IO::Socket::INET->new(
				PeerAddr => '127.0.0.1',
				PeerPort => $accept_port,
				Proto => 'tcp');
		},
		timeout => 10);
	die "stunnel $name did not listen on $accept_port (see $log)"
	  unless $listening;
	note "stunnel $name pid $pid: 127.0.0.1:$accept_port -> TLS 127.0.0.1:$tls_port";
	return ($pid, $log);
}

sub stop_stunnel
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid($pid, 0);
	delete $stunnels{$pid};
	return;
}

END
{
	my $exit_code = $?;
	foreach my $pid (keys %stunnels)
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	$? = $exit_code;
}

my $local_port = PostgreSQL::Test::Cluster::get_free_port();
my ($stunnel, $stunnel_log) = start_stunnel('client', $local_port, $cert);

my $node = new_node('tls', 'processor.redis_port' => $local_port);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

my $json_id = $redis->xadd($stream,
	payload => '{"device_id":"tls-json","ts":"2026-11-26T10:00:00Z","lat":52.37,"lon":4.89}');
my $flat_id = $redis->xadd($stream,
	device_id => 'tls-flat', ts => '1764151200123', lat => '52.37', lon => '4.89');

ok( wait_for_rows(
		$node,
		q{SELECT string_agg(device_id || ' ' || stream_id, ',' ORDER BY device_id)
		    FROM public.positions},
		"tls-flat $flat_id,tls-json $json_id"),
	'entries carried over stunnel and TLS land');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($node->safe_psql('postgres', 'SELECT redis_connected FROM processor.stats()'),
	't', 'processor.stats(): connected');

my @worker_conns = grep { /\bcmd=xreadgroup\b/ } split /\n/,
  $redis->cli('CLIENT', 'LIST');
is(scalar(@worker_conns), 1, 'one worker connection in CLIENT LIST');
like($worker_conns[0] // '', qr/\bladdr=127\.0\.0\.1:$tls_port\b/,
	'it arrives on Redis\'s TLS port');
like(slurp_file($stunnel_log), qr/Certificate accepted at depth=0: CN=localhost/,
	'stunnel verified Redis\'s certificate');

# --- stunnel restarted: the worker reconnects through it.

stop_stunnel($stunnel);
$redis->xadd($stream,
	device_id => 'tls-after-restart', ts => '1764151300000', lat => '1', lon => '2');
($stunnel) = start_stunnel('client2', $local_port, $cert);
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'tls-after-restart'},
		'1'),
	'after a stunnel restart the worker reconnects and the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

# --- A stunnel trusting another CA refuses Redis's certificate.

my $wrong_port = PostgreSQL::Test::Cluster::get_free_port();
my ($wrong, $wrong_log) = start_stunnel('wrong_ca', $wrong_port, $other_ca);
{
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'redis-cli', '-h', '127.0.0.1', '-p', $wrong_port, 'PING' ],
		'<', \'', '>', \$out, '2>', \$err);
	isnt($out, "PONG\n", 'a stunnel with the wrong CAfile gets no PONG');
}
ok(poll_until(sub { slurp_file($wrong_log) =~ /Rejected by CERT at depth=0|certificate verify failed/ },
		timeout => 10),
	'it logs the certificate rejection');
stop_stunnel($wrong);

$node->stop;
stop_stunnel($stunnel);
$redis->stop;

done_testing();
