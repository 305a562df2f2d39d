/*-------------------------------------------------------------------------
 *
 * loadgen.c
 *	  Fleet simulator and load generator for processor: GPS positions of N
 *	  devices moving along plausible routes, XADDed to a Redis Stream in
 *	  pipelines, in the wire encodings of SPEC §1.
 *
 *	  bench/loadgen --port 6379 --count 200000 --devices 10000 \
 *		  --encoding json --rate 0 --seed 1
 *
 * Used by the benchmark (bench/bench.sh), the TAP tests and the demo.  Run
 * with --help for every option.
 *
 * The fleet: every device has a start point, a heading and a speed; each of
 * its positions is one step later (--interval ms of simulated time, default
 * 1 s) and as far along its route as its speed carries it, turning and
 * speeding up or slowing down a little on the way; latitude stays within
 * +-85 (the route bounces off the poles), longitude wraps at +-180.  Devices
 * report in round-robin order, the way a fleet of trackers reporting at a
 * fixed interval fills a stream.  Timestamps are simulated time from
 * --start-ts (default 2026-01-01T00:00:00Z), so that the same --seed gives
 * the same entries, byte for byte, except for --stamp.
 *
 * Kinds of entries, chosen per entry with the given shares (percent):
 *	normal		the device's next position
 *	duplicate	(--dup) an exact copy of one of the last 1024 valid entries,
 *				as a producer's retry sends it; stored once by processor
 *	out_of_order (--ooo) a valid position that a tracker buffered and sends
 *				late: its ts lies strictly between the device's last two
 *				positions, so it is older than a position already sent; it
 *				lands as a row of its own
 *	invalid		(--invalid) an entry that breaks one rule of SPEC §1 (one of
 *				14 kinds: missing ts, lat out of range, a quoted number,
 *				broken JSON, a too-long device_id, ...); it ends up as one
 *				dead letter
 * A duplicate needs an earlier valid entry and an out-of-order position a
 * device that has sent one; when there is none yet, a normal position is
 * sent instead and counted as such.  Every (device_id, ts) of a normal or
 * out-of-order position is unique, so rows = normal + out_of_order.
 *
 * Output: one line on stdout at the end (or after SIGINT/SIGTERM), of
 * key=value pairs for scripts:
 *	sent=N normal=N duplicate=N out_of_order=N invalid=N json=N flat=N
 *	rows=N errors=N seconds=S rate=R
 * Exit status 0 when every XADD succeeded, 1 otherwise, 2 for bad usage.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#define MAX_FIELDS			12
#define ENTRY_BUF			4096	/* bytes of field values of one entry */
#define JSON_BUF			3072	/* one payload or attributes object */
#define DUP_RING			1024	/* recent valid entries a duplicate copies */
#define MIN_TICK_US			1000	/* a rate-limited sender wakes at most
									 * once a millisecond */
#define DEFAULT_START_MS	INT64_C(1767225600000)	/* 2026-01-01T00:00:00Z */
#define KM_PER_DEGREE		111.195
#define MAX_ABS_LAT			85.0
#define N_INVALID_KINDS		14

typedef enum Encoding
{
	ENC_JSON,
	ENC_FLAT,
	ENC_MIXED
} Encoding;

typedef enum Kind
{
	KIND_NORMAL,
	KIND_DUPLICATE,
	KIND_OUT_OF_ORDER,
	KIND_INVALID,
	N_KINDS
} Kind;

/* Command-line settings. */
typedef struct Options
{
	const char *host;
	int			port;
	const char *stream;
	int64_t		count;			/* 0: until SIGINT/SIGTERM */
	int			devices;
	double		rate;			/* entries/s; 0: as fast as possible */
	Encoding	encoding;
	double		dup_pct;
	double		ooo_pct;
	double		invalid_pct;
	int			pipeline;
	bool		stamp;
	bool		attributes;
	uint64_t	seed;
	int64_t		start_ms;
	int			interval_ms;
	bool		quiet;
} Options;

/* One simulated tracker. */
typedef struct Device
{
	char		id[24];
	double		lat;
	double		lon;
	double		prev_lat;		/* the position before the last one */
	double		prev_lon;
	double		heading;		/* degrees, [0, 360) */
	double		speed;			/* km/h */
	double		altitude;		/* m */
	int			satellites;
	int64_t		phase_ms;		/* offset of its reports within an interval */
	int64_t		steps;			/* normal positions sent */
	int64_t		ooo_step;		/* step of its last out-of-order position */
	int			ooo_in_step;	/* out-of-order positions sent at ooo_step */
	uint64_t	odometer;		/* the 21-digit integer attribute, low part */
	int			odometer_lead;	/* its leading digit, 1..9 */
	uint8_t		ibutton[8];		/* the Buffer attribute */
	int			gsm;
	int			ext_mv;
	int			battery_mv;
} Device;

/*
 * One stream entry: field names and values, the values packed in buf.  Only
 * the first offsetof(Entry, buf) + used bytes matter, so that copying an
 * entry into the duplicate ring copies no more than that.
 */
typedef struct Entry
{
	bool		json;			/* JSON encoding (else flat) */
	int			nfields;
	const char *names[MAX_FIELDS];
	size_t		offs[MAX_FIELDS];
	size_t		lens[MAX_FIELDS];
	size_t		used;
	char		buf[ENTRY_BUF];
} Entry;

/* A growing text in a fixed buffer, for JSON. */
typedef struct Text
{
	char	   *data;
	size_t		len;
	size_t		size;
} Text;

static Options opt;
static Device *devices;
static Entry *dup_ring;
static int	dup_ring_n;			/* entries in the ring */
static int	dup_ring_next;		/* slot the next valid entry goes to */
static int64_t next_device;		/* round-robin position */
static uint64_t rng_state;
static volatile sig_atomic_t stop_requested = 0;

static int64_t kind_count[N_KINDS];
static int64_t json_count;
static int64_t flat_count;

/* ----------------------------------------------------------------
 * Small helpers: errors, random numbers, clocks, text
 * ----------------------------------------------------------------
 */

static void die(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt,...)
{
	va_list		args;

	fprintf(stderr, "loadgen: ");
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	exit(1);
}

/*
 * splitmix64: small, fast, and the same sequence on every platform for a
 * given --seed.
 */
static uint64_t
rng_next(void)
{
	uint64_t	z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double
rng_unit(void)
{
	return (double) (rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [lo, hi). */
static double
rng_range(double lo, double hi)
{
	return lo + (hi - lo) * rng_unit();
}

/* Uniform integer in [0, n). */
static int64_t
rng_below(int64_t n)
{
	return (int64_t) (rng_next() % (uint64_t) n);
}

static int64_t
clock_us(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleep until the CLOCK_MONOTONIC time t_us; a signal cuts it short. */
static void
sleep_until_us(int64_t t_us)
{
	struct timespec ts;

	ts.tv_sec = t_us / 1000000;
	ts.tv_nsec = (t_us % 1000000) * 1000;
	(void) clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void text_append(Text *t, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static void
text_append(Text *t, const char *fmt,...)
{
	va_list		args;
	int			n;

	va_start(args, fmt);
	n = vsnprintf(t->data + t->len, t->size - t->len, fmt, args);
	va_end(args);
	if (n < 0 || (size_t) n >= t->size - t->len)
		die("internal error: JSON text longer than %zu bytes", t->size);
	t->len += n;
}

/* ISO-8601 with milliseconds and Z. */
static void
format_iso(int64_t ms, char *out, size_t size)
{
	time_t		secs = (time_t) (ms / 1000);
	struct tm	tm;
	char		date[32];

	gmtime_r(&secs, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, size, "%s.%03dZ", date, (int) (ms % 1000));
}

/* ----------------------------------------------------------------
 * Entries
 * ----------------------------------------------------------------
 */

static void
entry_reset(Entry *e, bool json)
{
	e->json = json;
	e->nfields = 0;
	e->used = 0;
}

static void entry_add(Entry *e, const char *name, const char *fmt,...) __attribute__((format(printf, 3, 4)));

/* Add a field whose value is formatted like printf. */
static void
entry_add(Entry *e, const char *name, const char *fmt,...)
{
	va_list		args;
	int			n;

	if (e->nfields >= MAX_FIELDS)
		die("internal error: more than %d fields", MAX_FIELDS);
	va_start(args, fmt);
	n = vsnprintf(e->buf + e->used, ENTRY_BUF - e->used, fmt, args);
	va_end(args);
	if (n < 0 || (size_t) n >= ENTRY_BUF - e->used)
		die("internal error: entry longer than %d bytes", ENTRY_BUF);
	e->names[e->nfields] = name;
	e->offs[e->nfields] = e->used;
	e->lens[e->nfields] = n;
	e->nfields++;
	e->used += n + 1;
}

/* Copy an entry (its used part only). */
static void
entry_copy(Entry *dst, const Entry *src)
{
	memcpy(dst, src, offsetof(Entry, buf) + src->used);
}

/* ----------------------------------------------------------------
 * The fleet
 * ----------------------------------------------------------------
 */

/*
 * Give every device an id (15 digits, like an IMEI), a start point on land
 * latitudes, a heading, a speed and the constants of its attributes.
 */
static void
fleet_init(void)
{
	int			i;
	int			j;

	devices = calloc(opt.devices, sizeof(Device));
	if (devices == NULL)
		die("out of memory");
	for (i = 0; i < opt.devices; i++)
	{
		Device	   *d = &devices[i];

		snprintf(d->id, sizeof(d->id), "35630704%07d", i);
		d->lat = d->prev_lat = rng_range(-55.0, 70.0);
		d->lon = d->prev_lon = rng_range(-180.0, 180.0);
		d->heading = rng_range(0.0, 360.0);
		d->speed = rng_range(0.0, 110.0);
		d->altitude = rng_range(0.0, 400.0);
		d->satellites = 4 + (int) rng_below(11);
		d->phase_ms = rng_below(opt.interval_ms);
		d->ooo_step = -1;
		d->odometer = rng_next() % UINT64_C(10000000000000000000);
		d->odometer_lead = 1 + (int) rng_below(9);
		for (j = 0; j < 8; j++)
			d->ibutton[j] = (uint8_t) rng_below(256);
		d->gsm = (int) rng_below(6);
		d->ext_mv = 11500 + (int) rng_below(3000);
		d->battery_mv = 3700 + (int) rng_below(500);
	}
}

/* The ts of a device's normal position number step (0-based). */
static int64_t
step_ts(const Device *d, int64_t step)
{
	return opt.start_ms + d->phase_ms + step * (int64_t) opt.interval_ms;
}

/*
 * Move a device one step along its route: turn a little, change speed a
 * little (sometimes stop), advance by speed x interval, keep latitude
 * within +-MAX_ABS_LAT and longitude within [-180, 180).
 */
static void
device_move(Device *d)
{
	double		km;
	double		rad;
	double		coslat;

	d->prev_lat = d->lat;
	d->prev_lon = d->lon;

	d->heading = fmod(d->heading + rng_range(-15.0, 15.0) + 360.0, 360.0);
	if (rng_unit() < 0.02)
		d->speed = 0.0;			/* a stop: traffic light, delivery */
	else
		d->speed = fmin(130.0, fmax(0.0, d->speed + rng_range(-6.0, 6.5)));
	d->altitude = fmin(3000.0, fmax(-50.0, d->altitude + rng_range(-3.0, 3.0)));
	d->satellites = (int) fmin(14, fmax(3, d->satellites + (int) rng_below(3) - 1));

	km = d->speed * opt.interval_ms / 3600000.0;
	rad = d->heading * M_PI / 180.0;
	coslat = fmax(0.01, cos(d->lat * M_PI / 180.0));
	d->lat += km * cos(rad) / KM_PER_DEGREE;
	d->lon += km * sin(rad) / (KM_PER_DEGREE * coslat);
	if (d->lat > MAX_ABS_LAT || d->lat < -MAX_ABS_LAT)
	{
		d->lat = d->lat > 0 ? MAX_ABS_LAT : -MAX_ABS_LAT;
		d->heading = fmod(540.0 - d->heading, 360.0);	/* bounce */
	}
	if (d->lon >= 180.0)
		d->lon -= 360.0;
	if (d->lon < -180.0)
		d->lon += 360.0;
	d->odometer += (uint64_t) (km * 1000.0);
	if (d->odometer >= UINT64_C(10000000000000000000))
		d->odometer -= UINT64_C(10000000000000000000);
}

/* A position to encode: a device's values, possibly altered. */
typedef struct Fix
{
	const Device *dev;
	const char *device_id;
	int64_t		ts;
	double		lat;
	double		lon;
	double		speed;
	int			heading;
	int			priority;
	int64_t		stamp_us;		/* 0: no stamp */
} Fix;

/*
 * The attributes object, like a Teltonika tracker's I/O elements as a Node
 * service forwards them: about ten keys, among them a 21-digit integer
 * (key "16", the odometer) and a Node Buffer (key "78", an iButton id).
 * With --stamp, "sent_us" holds the send time in epoch microseconds.
 */
static void
format_attributes(const Fix *f, Text *t)
{
	const Device *d = f->dev;
	bool		moving = f->speed >= 3.0;
	int			i;

	text_append(t, "{");
	if (opt.attributes)
	{
		text_append(t, "\"239\":%d,\"240\":%d,\"21\":%d,\"200\":0,\"69\":1,"
					"\"66\":%d,\"67\":%d,\"9\":%.3f,\"241\":24602,"
					"\"16\":%d%020" PRIu64 ",\"78\":{\"type\":\"Buffer\",\"data\":[",
					moving ? 1 : 0, moving ? 1 : 0, d->gsm,
					d->ext_mv + (int) rng_below(200), d->battery_mv,
					rng_range(0.0, 1.0), d->odometer_lead, d->odometer);
		for (i = 0; i < 8; i++)
			text_append(t, "%s%u", i ? "," : "", d->ibutton[i]);
		text_append(t, "]}");
	}
	if (f->stamp_us > 0)
		text_append(t, "%s\"sent_us\":%" PRId64, opt.attributes ? "," : "",
					f->stamp_us);
	text_append(t, "}");
}

/* Encode a valid position as a JSON payload entry. */
static void
encode_json(const Fix *f, Entry *e)
{
	char		json[JSON_BUF];
	char		iso[40];
	Text		t = {json, 0, sizeof(json)};

	format_iso(f->ts, iso, sizeof(iso));
	text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,"
				"\"altitude\":%.1f,\"speed\":%.1f,\"heading\":%d,"
				"\"satellites\":%d,\"priority\":%d,\"attributes\":",
				f->device_id, iso, f->lat, f->lon, f->dev->altitude, f->speed,
				f->heading, f->dev->satellites, f->priority);
	format_attributes(f, &t);
	text_append(&t, "}");
	entry_reset(e, true);
	entry_add(e, "payload", "%s", json);
}

/* Encode a valid position as flat fields (ts in epoch milliseconds). */
static void
encode_flat(const Fix *f, Entry *e)
{
	char		json[JSON_BUF];
	Text		t = {json, 0, sizeof(json)};

	format_attributes(f, &t);
	entry_reset(e, false);
	entry_add(e, "device_id", "%s", f->device_id);
	entry_add(e, "ts", "%" PRId64, f->ts);
	entry_add(e, "lat", "%.6f", f->lat);
	entry_add(e, "lon", "%.6f", f->lon);
	entry_add(e, "altitude", "%.1f", f->dev->altitude);
	entry_add(e, "speed", "%.1f", f->speed);
	entry_add(e, "heading", "%d", f->heading);
	entry_add(e, "satellites", "%d", f->dev->satellites);
	entry_add(e, "priority", "%d", f->priority);
	entry_add(e, "attributes", "%s", json);
}

/* JSON or flat for the next entry, as --encoding says. */
static bool
pick_json(void)
{
	if (opt.encoding == ENC_MIXED)
		return rng_unit() < 0.5;
	return opt.encoding == ENC_JSON;
}

/* A device's current position as a Fix. */
static void
fix_from_device(const Device *d, int64_t ts, Fix *f)
{
	f->dev = d;
	f->device_id = d->id;
	f->ts = ts;
	f->lat = d->lat;
	f->lon = d->lon;
	f->speed = d->speed;
	f->heading = (int) d->heading % 360;
	f->priority = rng_unit() < 0.03 ? 1 : 0;	/* an alarm now and then */
	f->stamp_us = opt.stamp ? clock_us(CLOCK_REALTIME) : 0;
}

/* ----------------------------------------------------------------
 * The four kinds of entries
 * ----------------------------------------------------------------
 */

/* Remember a valid entry for later duplicates. */
static void
remember(const Entry *e)
{
	if (dup_ring == NULL)
		return;
	entry_copy(&dup_ring[dup_ring_next], e);
	dup_ring_next = (dup_ring_next + 1) % DUP_RING;
	if (dup_ring_n < DUP_RING)
		dup_ring_n++;
}

/* The next device in round-robin order, moved one step: its new position. */
static void
make_normal(Entry *e)
{
	Device	   *d = &devices[next_device];
	Fix			f;

	next_device = (next_device + 1) % opt.devices;
	if (d->steps > 0)
		device_move(d);
	fix_from_device(d, step_ts(d, d->steps), &f);
	d->steps++;
	if (pick_json())
		encode_json(&f, e);
	else
		encode_flat(&f, e);
	remember(e);
}

/* A copy of a recent valid entry; false if there is none yet. */
static bool
make_duplicate(Entry *e)
{
	if (dup_ring_n == 0)
		return false;
	entry_copy(e, &dup_ring[rng_below(dup_ring_n)]);
	return true;
}

/*
 * A position that arrives late: for a device whose last position is step
 * L, a fix taken between steps L-1 and L (interpolated on the route), with
 * a ts strictly between theirs and distinct from every other late one of
 * that step.  False if no device tried can have one.
 */
static bool
make_out_of_order(Entry *e)
{
	int			attempt;

	for (attempt = 0; attempt < 16; attempt++)
	{
		Device	   *d = &devices[rng_below(opt.devices)];
		int64_t		last;
		int			j;
		double		frac;
		Fix			f;

		if (d->steps == 0)
			continue;
		last = d->steps - 1;
		j = (d->ooo_step == last) ? d->ooo_in_step : 0;
		if (j >= opt.interval_ms - 1)
			continue;
		d->ooo_step = last;
		d->ooo_in_step = j + 1;

		fix_from_device(d, step_ts(d, last) - opt.interval_ms + 1 + j, &f);
		frac = (double) (1 + j) / opt.interval_ms;
		f.lat = d->prev_lat + (d->lat - d->prev_lat) * frac;
		f.lon = d->prev_lon + (d->lon - d->prev_lon) * frac;
		if (fabs(d->lon - d->prev_lon) > 180.0)
			f.lon = d->prev_lon;	/* crossed the antimeridian */
		if (pick_json())
			encode_json(&f, e);
		else
			encode_flat(&f, e);
		remember(e);
		return true;
	}
	return false;
}

/*
 * An invalid JSON entry of the given kind (0 .. N_INVALID_KINDS - 1); each
 * breaks exactly one rule of SPEC §1 and is otherwise a normal position.
 */
static void
invalid_json(const Fix *f, int kind, Entry *e)
{
	char		json[JSON_BUF];
	char		iso[40];
	char		attrs[JSON_BUF];
	Text		t = {json, 0, sizeof(json)};
	Text		a = {attrs, 0, sizeof(attrs)};

	format_iso(f->ts, iso, sizeof(iso));
	format_attributes(f, &a);
	entry_reset(e, true);
	switch (kind)
	{
		case 0:				/* missing key: ts */
			text_append(&t, "{\"device_id\":\"%s\",\"lat\":%.6f,\"lon\":%.6f}",
						f->device_id, f->lat, f->lon);
			break;
		case 1:				/* lat out of range */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.4f,\"lon\":%.6f}",
						f->device_id, iso, 90.0 + rng_range(0.001, 90.0), f->lon);
			break;
		case 2:				/* lon out of range */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.4f}",
						f->device_id, iso, f->lat, -180.0 - rng_range(0.001, 180.0));
			break;
		case 3:				/* lat is not a number: a quoted number */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":\"%.6f\",\"lon\":%.6f}",
						f->device_id, iso, f->lat, f->lon);
			break;
		case 4:				/* invalid JSON: cut short */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"attributes\":%s}",
						f->device_id, iso, f->lat, f->lon, attrs);
			t.len = t.len / 2;
			t.data[t.len] = '\0';
			break;
		case 5:				/* device_id too long */
			text_append(&t, "{\"device_id\":\"%s-%s-%s-%s-%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f}",
						f->device_id, f->device_id, f->device_id, f->device_id,
						f->device_id, iso, f->lat, f->lon);
			break;
		case 6:				/* satellites out of range */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"satellites\":%d}",
						f->device_id, iso, f->lat, f->lon, 256 + (int) rng_below(1000));
			break;
		case 7:				/* invalid ts */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"2026-13-45T25:61:00Z\",\"lat\":%.6f,\"lon\":%.6f}",
						f->device_id, f->lat, f->lon);
			break;
		case 8:				/* ts has no time zone */
			iso[strlen(iso) - 1] = '\0';
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f}",
						f->device_id, iso, f->lat, f->lon);
			break;
		case 9:				/* speed out of range (negative) */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"speed\":-%.1f}",
						f->device_id, iso, f->lat, f->lon, rng_range(0.1, 50.0));
			break;
		case 10:				/* heading out of range */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"heading\":%d}",
						f->device_id, iso, f->lat, f->lon, 361 + (int) rng_below(300));
			break;
		case 11:				/* duplicate key: lat */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"lat\":%.6f}",
						f->device_id, iso, f->lat, f->lon, f->lat);
			break;
		case 12:				/* attributes is not an object */
			text_append(&t, "{\"device_id\":\"%s\",\"ts\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"attributes\":[%d,%d]}",
						f->device_id, iso, f->lat, f->lon, f->heading, f->priority);
			break;
		default:				/* neither a payload nor a device_id field */
			entry_add(e, "imei", "%s", f->device_id);
			entry_add(e, "data", "%s", attrs);
			return;
	}
	entry_add(e, "payload", "%s", json);
}

/* The same kinds of invalid entries, flat. */
static void
invalid_flat(const Fix *f, int kind, Entry *e)
{
	char		attrs[JSON_BUF];
	Text		a = {attrs, 0, sizeof(attrs)};

	format_attributes(f, &a);
	entry_reset(e, false);
	if (kind == 5)				/* device_id too long */
		entry_add(e, "device_id", "%s-%s-%s-%s-%s", f->device_id, f->device_id,
				  f->device_id, f->device_id, f->device_id);
	else if (kind == N_INVALID_KINDS - 1)	/* no payload, no device_id */
		entry_add(e, "imei", "%s", f->device_id);
	else
		entry_add(e, "device_id", "%s", f->device_id);

	if (kind == 0)				/* missing key: ts (empty means absent) */
		entry_add(e, "ts", "%s", "");
	else if (kind == 7)			/* invalid ts */
		entry_add(e, "ts", "%s", "yesterday");
	else if (kind == 8)			/* ts has no time zone */
		entry_add(e, "ts", "%s", "2026-01-01 12:00:00");
	else
		entry_add(e, "ts", "%" PRId64, f->ts);

	if (kind == 1)
		entry_add(e, "lat", "%.4f", 90.0 + rng_range(0.001, 90.0));
	else if (kind == 3)			/* lat is not a number */
		entry_add(e, "lat", "%s", "N52.1");
	else
		entry_add(e, "lat", "%.6f", f->lat);
	if (kind == 2)
		entry_add(e, "lon", "%.4f", -180.0 - rng_range(0.001, 180.0));
	else
		entry_add(e, "lon", "%.6f", f->lon);

	if (kind == 6)
		entry_add(e, "satellites", "%d", 256 + (int) rng_below(1000));
	else if (kind == 9)
		entry_add(e, "speed", "-%.1f", rng_range(0.1, 50.0));
	else if (kind == 10)
		entry_add(e, "heading", "%d", 361 + (int) rng_below(300));
	else if (kind == 11)		/* duplicate key: lat */
		entry_add(e, "lat", "%.6f", f->lat);

	if (kind == 4)				/* invalid JSON in attributes: cut short */
		entry_add(e, "attributes", "%.*s", (int) (a.len / 2), attrs);
	else if (kind == 12)		/* attributes is not an object */
		entry_add(e, "attributes", "[%d,%d]", f->heading, f->priority);
	else
		entry_add(e, "attributes", "%s", attrs);
}

/*
 * An entry that breaks one rule of SPEC §1, for a random device, at the ts
 * its next position will have (it never lands, so it collides with
 * nothing).  The device does not move.
 */
static void
make_invalid(Entry *e)
{
	const Device *d = &devices[rng_below(opt.devices)];
	int			kind = (int) rng_below(N_INVALID_KINDS);
	Fix			f;

	fix_from_device(d, step_ts(d, d->steps), &f);
	if (pick_json())
		invalid_json(&f, kind, e);
	else
		invalid_flat(&f, kind, e);
}

/*
 * The next entry, of a kind drawn with the configured shares; returns the
 * kind actually made.
 */
static Kind
make_entry(Entry *e)
{
	double		r = rng_range(0.0, 100.0);
	Kind		kind = KIND_NORMAL;

	if (r < opt.invalid_pct)
	{
		make_invalid(e);
		kind = KIND_INVALID;
	}
	else if (r < opt.invalid_pct + opt.dup_pct)
	{
		if (make_duplicate(e))
			kind = KIND_DUPLICATE;
	}
	else if (r < opt.invalid_pct + opt.dup_pct + opt.ooo_pct)
	{
		if (make_out_of_order(e))
			kind = KIND_OUT_OF_ORDER;
	}
	else
		kind = KIND_NORMAL;

	if (kind == KIND_NORMAL)
		make_normal(e);
	kind_count[kind]++;
	if (e->json)
		json_count++;
	else
		flat_count++;
	return kind;
}

/* ----------------------------------------------------------------
 * Sending
 * ----------------------------------------------------------------
 */

/* Queue XADD <stream> * <fields...> for the entry in hiredis's buffer. */
static void
append_xadd(redisContext *c, const Entry *e)
{
	const char *argv[3 + 2 * MAX_FIELDS];
	size_t		argvlen[3 + 2 * MAX_FIELDS];
	int			argc = 0;
	int			i;

	argv[argc] = "XADD";
	argvlen[argc++] = 4;
	argv[argc] = opt.stream;
	argvlen[argc++] = strlen(opt.stream);
	argv[argc] = "*";
	argvlen[argc++] = 1;
	for (i = 0; i < e->nfields; i++)
	{
		argv[argc] = e->names[i];
		argvlen[argc++] = strlen(e->names[i]);
		argv[argc] = e->buf + e->offs[i];
		argvlen[argc++] = e->lens[i];
	}
	if (redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK)
		die("could not queue XADD: %s", c->errstr);
}

/*
 * Read n replies; returns how many were errors (the first is printed).  A
 * lost connection ends the program.
 */
static int64_t
read_replies(redisContext *c, int n)
{
	static bool printed = false;
	int64_t		errors = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		redisReply *reply = NULL;

		if (redisGetReply(c, (void **) &reply) != REDIS_OK || reply == NULL)
			die("lost the connection to Redis: %s", c->errstr);
		if (reply->type != REDIS_REPLY_STRING)
		{
			errors++;
			if (!printed)
			{
				fprintf(stderr, "loadgen: XADD failed: %s\n",
						reply->type == REDIS_REPLY_ERROR ? reply->str :
						"unexpected reply type");
				printed = true;
			}
		}
		freeReplyObject(reply);
	}
	return errors;
}

/*
 * How many entries to send now: up to --pipeline, and with --rate only
 * those due by now (entry i is due at start + i / rate).  Sleeps first if
 * none is due yet, waking at most once per MIN_TICK_US.
 */
static int
next_chunk(int64_t sent, int64_t start_us, int64_t *last_tick_us)
{
	int64_t		chunk = opt.pipeline;

	if (opt.rate > 0)
	{
		int64_t		now = clock_us(CLOCK_MONOTONIC);
		int64_t		due = (int64_t) ((now - start_us) * opt.rate / 1e6) + 1;

		if (due <= sent || now - *last_tick_us < MIN_TICK_US)
		{
			int64_t		next_due = start_us + (int64_t) (sent * 1e6 / opt.rate);

			if (next_due < *last_tick_us + MIN_TICK_US)
				next_due = *last_tick_us + MIN_TICK_US;
			sleep_until_us(next_due);
			return 0;
		}
		*last_tick_us = now;
		if (due - sent < chunk)
			chunk = due - sent;
	}
	if (opt.count > 0 && opt.count - sent < chunk)
		chunk = opt.count - sent;
	return (int) chunk;
}

static void
on_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/*
 * Send --count entries (or until a signal), pipelined; returns the number of
 * error replies.
 */
static int64_t
run(redisContext *c, int64_t *sent_out, double *seconds_out)
{
	Entry	   *e = malloc(sizeof(Entry));
	int64_t		sent = 0;
	int64_t		errors = 0;
	int64_t		start_us = clock_us(CLOCK_MONOTONIC);
	int64_t		last_tick_us = start_us - MIN_TICK_US;
	int64_t		last_report_us = start_us;

	if (e == NULL)
		die("out of memory");
	while (!stop_requested && (opt.count == 0 || sent < opt.count))
	{
		int			chunk = next_chunk(sent, start_us, &last_tick_us);
		int			i;

		for (i = 0; i < chunk; i++)
		{
			make_entry(e);
			append_xadd(c, e);
		}
		if (chunk > 0)
			errors += read_replies(c, chunk);
		sent += chunk;

		if (!opt.quiet && clock_us(CLOCK_MONOTONIC) - last_report_us >= 5000000)
		{
			last_report_us = clock_us(CLOCK_MONOTONIC);
			fprintf(stderr, "loadgen: %" PRId64 " sent\n", sent);
		}
	}
	*sent_out = sent;
	*seconds_out = (clock_us(CLOCK_MONOTONIC) - start_us) / 1e6;
	free(e);
	return errors;
}

/* ----------------------------------------------------------------
 * Options and main
 * ----------------------------------------------------------------
 */

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: loadgen [OPTION]...\n"
			"XADD simulated GPS positions to a Redis Stream for processor.\n"
			"\n"
			"  -h, --host HOST        Redis address (default 127.0.0.1)\n"
			"  -p, --port PORT        Redis port (default 6379)\n"
			"  -s, --stream KEY       stream key (default telemetry:t)\n"
			"  -n, --count N          entries to send; 0 = until SIGINT/SIGTERM\n"
			"                         (default 10000)\n"
			"  -d, --devices N        devices in the fleet (default 100)\n"
			"  -r, --rate R           entries per second; 0 = as fast as\n"
			"                         possible (default 0)\n"
			"  -e, --encoding E       json, flat or mixed (default json)\n"
			"      --dup PCT          share of duplicates, percent (default 0)\n"
			"      --ooo PCT          share of out-of-order positions (default 0)\n"
			"      --invalid PCT      share of invalid entries (default 0)\n"
			"  -P, --pipeline N       XADD commands per pipeline (default 1000)\n"
			"      --stamp            put the send time (epoch microseconds) into\n"
			"                         the attribute \"sent_us\"\n"
			"      --no-attributes    send no attributes object (except sent_us)\n"
			"      --seed N           random seed (default 1)\n"
			"      --start-ts MS|now  ts of the first positions, epoch ms\n"
			"                         (default 1767225600000, 2026-01-01)\n"
			"      --interval MS      simulated time between a device's\n"
			"                         positions (default 1000, minimum 2)\n"
			"  -q, --quiet            no progress lines on stderr\n"
			"      --help             this text\n"
			"\n"
			"Prints one line at the end: sent=N normal=N duplicate=N\n"
			"out_of_order=N invalid=N json=N flat=N rows=N errors=N seconds=S rate=R\n"
			"(rows = normal + out_of_order: what lands in the target table).\n");
}

/* Parse a number in [lo, hi] or exit with a usage error. */
static double
parse_number(const char *name, const char *value, double lo, double hi)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(value, &end);
	if (errno != 0 || end == value || *end != '\0' || !(v >= lo && v <= hi))
	{
		fprintf(stderr, "loadgen: invalid value for --%s: \"%s\" (%g .. %g)\n",
				name, value, lo, hi);
		exit(2);
	}
	return v;
}

static void
parse_options(int argc, char **argv)
{
	enum
	{
		OPT_DUP = 256, OPT_OOO, OPT_INVALID, OPT_STAMP, OPT_NO_ATTRS,
		OPT_SEED, OPT_START_TS, OPT_INTERVAL, OPT_HELP
	};
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"stream", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'n'},
		{"devices", required_argument, NULL, 'd'},
		{"rate", required_argument, NULL, 'r'},
		{"encoding", required_argument, NULL, 'e'},
		{"pipeline", required_argument, NULL, 'P'},
		{"quiet", no_argument, NULL, 'q'},
		{"dup", required_argument, NULL, OPT_DUP},
		{"ooo", required_argument, NULL, OPT_OOO},
		{"invalid", required_argument, NULL, OPT_INVALID},
		{"stamp", no_argument, NULL, OPT_STAMP},
		{"no-attributes", no_argument, NULL, OPT_NO_ATTRS},
		{"seed", required_argument, NULL, OPT_SEED},
		{"start-ts", required_argument, NULL, OPT_START_TS},
		{"interval", required_argument, NULL, OPT_INTERVAL},
		{"help", no_argument, NULL, OPT_HELP},
		{NULL, 0, NULL, 0}
	};
	int			c;

	opt.host = "127.0.0.1";
	opt.port = 6379;
	opt.stream = "telemetry:t";
	opt.count = 10000;
	opt.devices = 100;
	opt.encoding = ENC_JSON;
	opt.pipeline = 1000;
	opt.attributes = true;
	opt.seed = 1;
	opt.start_ms = DEFAULT_START_MS;
	opt.interval_ms = 1000;

	while ((c = getopt_long(argc, argv, "h:p:s:n:d:r:e:P:q", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'h':
				opt.host = optarg;
				break;
			case 'p':
				opt.port = (int) parse_number("port", optarg, 1, 65535);
				break;
			case 's':
				opt.stream = optarg;
				break;
			case 'n':
				opt.count = (int64_t) parse_number("count", optarg, 0, 1e12);
				break;
			case 'd':
				opt.devices = (int) parse_number("devices", optarg, 1, 9999999);
				break;
			case 'r':
				opt.rate = parse_number("rate", optarg, 0, 1e9);
				break;
			case 'e':
				if (strcmp(optarg, "json") == 0)
					opt.encoding = ENC_JSON;
				else if (strcmp(optarg, "flat") == 0)
					opt.encoding = ENC_FLAT;
				else if (strcmp(optarg, "mixed") == 0)
					opt.encoding = ENC_MIXED;
				else
				{
					fprintf(stderr, "loadgen: --encoding must be json, flat or mixed\n");
					exit(2);
				}
				break;
			case 'P':
				opt.pipeline = (int) parse_number("pipeline", optarg, 1, 1000000);
				break;
			case 'q':
				opt.quiet = true;
				break;
			case OPT_DUP:
				opt.dup_pct = parse_number("dup", optarg, 0, 100);
				break;
			case OPT_OOO:
				opt.ooo_pct = parse_number("ooo", optarg, 0, 100);
				break;
			case OPT_INVALID:
				opt.invalid_pct = parse_number("invalid", optarg, 0, 100);
				break;
			case OPT_STAMP:
				opt.stamp = true;
				break;
			case OPT_NO_ATTRS:
				opt.attributes = false;
				break;
			case OPT_SEED:
				{
					char	   *end;

					errno = 0;
					opt.seed = strtoull(optarg, &end, 10);
					if (errno != 0 || end == optarg || *end != '\0' ||
						optarg[0] == '-')
					{
						fprintf(stderr, "loadgen: invalid value for --seed: \"%s\"\n",
								optarg);
						exit(2);
					}
				}
				break;
			case OPT_START_TS:
				if (strcmp(optarg, "now") == 0)
					opt.start_ms = clock_us(CLOCK_REALTIME) / 1000;
				else
					opt.start_ms = (int64_t) parse_number("start-ts", optarg,
														  0, 253402300799000.0);
				break;
			case OPT_INTERVAL:
				opt.interval_ms = (int) parse_number("interval", optarg, 2, 86400000);
				break;
			case OPT_HELP:
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "loadgen: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (opt.dup_pct + opt.ooo_pct + opt.invalid_pct > 100.0)
	{
		fprintf(stderr, "loadgen: --dup + --ooo + --invalid exceed 100 percent\n");
		exit(2);
	}
}

int
main(int argc, char **argv)
{
	redisContext *c;
	struct timeval timeout = {5, 0};
	struct sigaction sa;
	int64_t		sent = 0;
	int64_t		errors;
	double		seconds = 0;

	parse_options(argc, argv);
	rng_state = opt.seed;
	fleet_init();
	if (opt.dup_pct > 0)
	{
		dup_ring = malloc(sizeof(Entry) * DUP_RING);
		if (dup_ring == NULL)
			die("out of memory");
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	c = redisConnectWithTimeout(opt.host, opt.port, timeout);
	if (c == NULL || c->err)
		die("could not connect to Redis at %s:%d: %s", opt.host, opt.port,
			c ? c->errstr : "out of memory");
	/* a reply may be slow under load, but not this slow */
	timeout.tv_sec = 60;
	redisSetTimeout(c, timeout);

	errors = run(c, &sent, &seconds);
	redisFree(c);

	printf("sent=%" PRId64 " normal=%" PRId64 " duplicate=%" PRId64
		   " out_of_order=%" PRId64 " invalid=%" PRId64 " json=%" PRId64
		   " flat=%" PRId64 " rows=%" PRId64 " errors=%" PRId64
		   " seconds=%.3f rate=%.0f\n",
		   sent, kind_count[KIND_NORMAL], kind_count[KIND_DUPLICATE],
		   kind_count[KIND_OUT_OF_ORDER], kind_count[KIND_INVALID],
		   json_count, flat_count,
		   kind_count[KIND_NORMAL] + kind_count[KIND_OUT_OF_ORDER], errors,
		   seconds, seconds > 0 ? sent / seconds : 0.0);
	return errors > 0 ? 1 : 0;
}
