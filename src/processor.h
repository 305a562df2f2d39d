/*-------------------------------------------------------------------------
 *
 * processor.h
 *	  Declarations shared by the modules of the processor extension.
 *
 * The extension is split by concern:
 *	processor.c	_PG_init, GUC definitions, background worker registration
 *	worker.c	the worker's main loop: startup order, reloads, backoff,
 *				error recovery (with session.c and batch.c, sharing
 *				worker_internal.h)
 *	session.c	the worker's Redis side: connection, group, what to read;
 *				session_ownership.c keeps held entries ours
 *	batch.c		a batch's life: decode, state, transaction, XACK
 *	redis.c		hiredis connection, non-blocking I/O; redis_commands.c
 *				XGROUP CREATE, XREADGROUP, XACK and their replies
 *	stream.c	rare-path group commands: XPENDING, XAUTOCLAIM, XCLAIM, XINFO
 *	codec.c		stream entry -> Position (both wire encodings);
 *				codec_json.c parses the JSON, codec_attrs.c builds the
 *				attributes; codec_text.c echoes, escapes and renders
 *				dead-letter fields; these use only codec.h and
 *				codec_build.h, so that they also build without the
 *				server (test/fuzz/standalone.c);
 *				codec_build.c is their server side (jsonb, numeric,
 *				float8, timestamptz)
 *	tables.c	existence, creation and validation of the two tables
 *	writer.c	SPI statements inserting positions and dead letters, as the
 *				table's owner; writer_isolation.c runs the positions'
 *				in subtransactions (plain first, row-level isolation)
 *	state.c		shared-memory device table (hash + LRU)
 *	stats.c		shared-memory per-worker stats slots
 *	funcs.c		processor.decode(); funcs_monitor.c the inspection
 *				functions; replay.c processor.replay_dead_letters()
 *
 * Memory: a StreamEntry and a Position live in the palloc context that was
 * current when they were made (the worker's per-batch context).  Nothing in
 * here points into hiredis-owned (malloc'd) memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROCESSOR_H
#define PROCESSOR_H

#include "postgres.h"

#include "codec.h"
#include "utils/jsonb.h"

/* Extension name, as in CREATE EXTENSION and the error text of §6. */
#define PROCESSOR_EXTENSION_NAME	"processor"

/* ----------------------------------------------------------------
 * GUCs (processor.c).  Names mirror processor.<name>.
 * ----------------------------------------------------------------
 */
extern char *processor_database;
extern char *processor_role;
extern int	processor_workers;
extern int	processor_max_devices;

extern bool processor_enabled;
extern char *processor_redis_host;
extern int	processor_redis_port;
extern char *processor_redis_user;
extern char *processor_redis_password;
extern char *processor_redis_password_file;
extern int	processor_redis_db;
extern int	processor_redis_connect_timeout;	/* ms */
extern int	processor_redis_timeout;	/* ms */
extern char *processor_stream;
extern char *processor_group;
extern char *processor_consumer_name;
extern char *processor_group_start_id;
extern int	processor_batch_size;
extern int	processor_block_time;	/* ms */
extern char *processor_target_table;
extern char *processor_dead_letter_table;
extern bool processor_dead_letter;
extern int	processor_max_entry_bytes;
extern int	processor_max_reply_bytes;
extern int	processor_max_deliveries;
extern int	processor_claim_interval;	/* ms */
extern int	processor_claim_min_idle;	/* ms */
extern int	processor_retry_min;	/* ms */
extern int	processor_retry_max;	/* ms */

extern void processor_define_gucs(void);

/*
 * Split a qualified table GUC value ("schema.table" or "table") into its
 * parts; a missing schema becomes "public".  Returns false for a malformed
 * value.  Never raises an ERROR (safe in a GUC check hook).
 */
extern bool processor_split_table_name(const char *value,
									   char **schemaname, char **relname);

/* ----------------------------------------------------------------
 * redis.c, redis_commands.c
 * ----------------------------------------------------------------
 */
typedef struct RedisConn RedisConn;

/*
 * Outcome of a Redis operation; the message is in redis_last_error().
 *
 * After REDIS_FAILED and REDIS_REPLY_TOO_LARGE the connection has been
 * dropped: every further call on it fails with
 * REDIS_FAILED, and the caller must redis_disconnect() it and connect again.
 * After REDIS_NOGROUP and REDIS_ERROR_REPLY it is still usable.
 *
 * A SIGHUP that arrives while a blocking read waits for its reply ends the
 * call within the 100 ms of SPEC §3 with REDIS_INTERRUPTED; the reply can
 * then be collected with redis_read_group_resume (or the connection
 * dropped).  Immediate commands (XACK and the like) are waited for; a
 * SIGHUP during a connect makes it fail.
 *
 * Note: hiredis #defines REDIS_OK as 0 too.  Only redis_internal.h includes
 * hiredis, after this header; never include hiredis before it.
 */
typedef enum RedisResult
{
	REDIS_OK = 0,
	REDIS_NOGROUP,				/* the group (or stream) is gone */
	REDIS_FAILED,				/* connection dropped; reconnect */
	REDIS_ERROR_REPLY,			/* another error reply (WRONGTYPE, LOADING,
								 * ...); connection still usable */
	REDIS_REPLY_TOO_LARGE,		/* reply over the max_reply_bytes limit;
								 * connection dropped */
	REDIS_INTERRUPTED			/* SIGHUP during a blocking read; resumable */
} RedisResult;

/* A palloc'd copy of any reply, for redis_command_argv(). */
typedef enum RedisValueType
{
	REDIS_VALUE_NIL,
	REDIS_VALUE_INTEGER,		/* integer */
	REDIS_VALUE_STRING,			/* bulk string: str, len */
	REDIS_VALUE_STATUS,			/* simple string such as "OK": str, len */
	REDIS_VALUE_ERROR,			/* an error nested in an array: str, len */
	REDIS_VALUE_ARRAY			/* elements, nelements */
} RedisValueType;

typedef struct RedisValue
{
	RedisValueType type;
	int64		integer;
	char	   *str;			/* NUL-terminated; may contain NUL bytes */
	int			len;
	int			nelements;
	struct RedisValue *elements;
} RedisValue;

/*
 * Connect (non-blocking, through WaitLatchOrSocket), AUTH, SELECT, all
 * within connect_timeout_ms.  Returns NULL on failure with the reason in
 * *error (palloc'd, never containing the password); a SIGHUP during the
 * attempt is such a failure ("... interrupted by a configuration reload").
 * The connection is malloc'd and must be released with redis_disconnect on
 * every path.  A reply must arrive within reply_timeout_ms (plus the BLOCK
 * time of XREADGROUP) after its command was sent, or the connection is
 * dropped.  Every call waits on MyLatch and runs CHECK_FOR_INTERRUPTS, so
 * it may throw; a connection that an ERROR escaped from fails its next call.
 */
extern RedisConn *redis_connect(const char *host, int port,
								const char *user, const char *password,
								int db, int connect_timeout_ms,
								int reply_timeout_ms, char **error);
extern void redis_disconnect(RedisConn *conn);	/* NULL is fine */
extern const char *redis_last_error(RedisConn *conn);	/* until next call */

/*
 * Drop the connection (REDIS_REPLY_TOO_LARGE) when a reply exceeds max_bytes
 * received bytes; <= 0 (the default) means no limit.
 */
extern void redis_set_max_reply_bytes(RedisConn *conn, int64 max_bytes);

/* Set the reply timeout (ms, <= 0: none); returns the previous one. */
extern int	redis_set_reply_timeout(RedisConn *conn, int timeout_ms);

/*
 * Any command as an argument vector (argvlen NULL: strlen of each), which
 * may block up to block_ms in Redis (0 for an immediate command).  On
 * REDIS_OK *value is a palloc'd copy of the reply; an error reply gives
 * REDIS_NOGROUP or REDIS_ERROR_REPLY with *value NULL.
 */
extern RedisResult redis_command_argv(RedisConn *conn, int argc,
									  const char **argv, const size_t *argvlen,
									  int block_ms, RedisValue **value);

/*
 * XGROUP CREATE stream group start_id MKSTREAM; BUSYGROUP is success, any
 * other error reply (WRONGTYPE ...) is REDIS_ERROR_REPLY.
 */
extern RedisResult redis_ensure_group(RedisConn *conn, const char *stream,
									  const char *group, const char *start_id);

/*
 * XREADGROUP GROUP group consumer COUNT count [BLOCK block_ms] STREAMS
 * stream start.  start is ">" for new entries or an id for this consumer's
 * history.  block_ms < 0 sends no BLOCK (and 0 is Redis's "forever").
 * Entries are palloc'd in the current memory context; *nentries may be 0.
 * NOGROUP is REDIS_NOGROUP; a reply of the wrong shape drops the connection.
 */
extern RedisResult redis_read_group(RedisConn *conn, const char *stream,
									const char *group, const char *consumer,
									int count, int block_ms, const char *start,
									StreamEntry **entries, int *nentries);

/*
 * After redis_read_group returned REDIS_INTERRUPTED (a reload during its
 * BLOCK), collect its reply; the connection stays usable.  Any other call
 * on the connection instead drops it.
 */
extern RedisResult redis_read_group_resume(RedisConn *conn,
										   StreamEntry **entries,
										   int *nentries);

/*
 * XACK stream group id...; *acked gets the number Redis acknowledged.  With
 * soft_ms >= 0, a reply slower than soft_ms returns REDIS_INTERRUPTED and
 * leaves the connection waiting: redis_ack_resume then collects the reply
 * within the full deadline (the worker serves interrupts in between).
 */
extern RedisResult redis_ack(RedisConn *conn, const char *stream,
							 const char *group, char **ids, int nids,
							 int64 soft_ms, int64 *acked);
extern RedisResult redis_ack_resume(RedisConn *conn, int64 *acked);

/* ----------------------------------------------------------------
 * stream.c: consumer-group bookkeeping (rare path)
 * ----------------------------------------------------------------
 */
extern RedisResult stream_delivery_counts(RedisConn *conn, const char *stream,
										  const char *group,
										  const char *consumer,
										  StreamEntry *entries, int n);
extern RedisResult stream_autoclaim(RedisConn *conn, const char *stream,
									const char *group, const char *consumer,
									int min_idle_ms, char *cursor, int count,
									StreamEntry **entries, int *nentries,
									char ***deleted, int *ndeleted);
extern RedisResult stream_touch(RedisConn *conn, const char *stream,
								const char *group, const char *consumer,
								char **ids, int nids);
extern RedisResult stream_first_pending(RedisConn *conn, const char *stream,
										const char *group,
										const char *consumer,
										const char *after, char **id);
extern RedisResult stream_group_info(RedisConn *conn, const char *stream,
									 const char *group, const char *consumer,
									 int64 *lag, int64 *group_pending,
									 int64 *pending);

/* ----------------------------------------------------------------
 * tables.c
 * ----------------------------------------------------------------
 */

/*
 * Make sure both tables exist and fit (SPEC §2).  Must be called inside a
 * transaction with SPI connected.  Returns true when both are usable;
 * otherwise false with *problem describing what is wrong (palloc'd).
 */
extern bool tables_ensure(char **problem);

/* ----------------------------------------------------------------
 * writer.c, writer_isolation.c
 * ----------------------------------------------------------------
 */

/* One invalid entry on its way to the dead-letter table. */
typedef struct DeadLetter
{
	const StreamEntry *entry;
	const char *error;
	int64		deliveries;		/* 0 = unknown: stored as NULL */
} DeadLetter;

/* What one batch's insert achieved. */
typedef struct WriteResult
{
	int64		inserted;
	int64		duplicates;
	int64		dead_lettered;
} WriteResult;

/*
 * Insert positions (entries[i] is the entry positions[i] came from; its id
 * is the stream_id) and dead letters.  A position refused by a row-level
 * database error (SQLSTATE class 22 or 23, or raised by a trigger) is
 * dead-lettered with the database's message and counted in dead_lettered;
 * the others are inserted (SPEC §4).  Inserts run as the table's owner when
 * the current user is a superuser and the owner is not (SPEC §9).  Must be
 * called inside a transaction with SPI connected and a snapshot pushed;
 * raises an ERROR on a batch-level database error (the caller rolls back).
 */
extern void writer_insert_batch(const Position *positions,
								const StreamEntry *const *entries,
								int npositions,
								const DeadLetter *dead, int ndead,
								const char *stream, WriteResult *result);

/*
 * The positions part of writer_insert_batch alone: returns the number of
 * rows inserted; the positions refused by a row-level error come back as
 * *nrefused dead letters in *refused (palloc'd; not inserted anywhere).
 */
extern int64 writer_insert_positions(const Position *positions,
									 const StreamEntry *const *entries,
									 int n, DeadLetter **refused,
									 int *nrefused);

/* Forget prepared plans (after the table GUCs change). */
extern void writer_reset_plans(void);

/* ----------------------------------------------------------------
 * funcs.c
 * ----------------------------------------------------------------
 */

/*
 * Fill *entry (id "") from a jsonb object of field -> value: the shape of
 * processor.decode(jsonb)'s argument and of the dead-letter table's fields.
 * Palloc'd in the current memory context; never raises for any object.
 */
extern void funcs_entry_from_jsonb(Jsonb *fields, StreamEntry *entry);

/* ----------------------------------------------------------------
 * state.c: device table in shared memory (SPEC §5), and the one
 * shmem_request/shmem_startup hook pair for state.c and stats.c
 * ----------------------------------------------------------------
 */

/* Readers copy at most this many devices per hold of the state lock. */
#define STATE_SCAN_CHUNK	1000

/* A consistent copy of one device's state. */
typedef struct DeviceState
{
	char		device_id[PROCESSOR_DEVICE_ID_MAX + 1];	/* NUL-terminated */
	bool		has_altitude;
	bool		has_speed;
	bool		has_heading;
	bool		has_satellites;
	int32		satellites;
	TimestampTz ts;				/* the latest position: greatest ts */
	float8		lat;
	float8		lon;
	float8		altitude;
	float8		speed;
	float8		heading;
	TimestampTz last_seen;		/* max ts seen (= ts) */
	TimestampTz updated_at;		/* wall clock of the last position applied */
	int64		positions_seen; /* positions applied since it entered */
} DeviceState;

/* Where a chunked scan of the device table resumes; see state_scan_next. */
typedef struct StateScan
{
	bool		started;
	int			next_slot;
	uint64		scan_seq;
} StateScan;

/* Call from _PG_init, only while preloading (shared_preload_libraries). */
extern void processor_shmem_install_hooks(void);

/* Is the shared memory of state.c and stats.c there (library preloaded)? */
extern bool state_enabled(void);

/*
 * Apply a batch's decoded valid positions to the device table, under one
 * exclusive lock acquisition.  Never raises an ERROR; a no-op without
 * shared memory.
 */
extern void state_update_batch(const Position *positions, int n);

extern void state_scan_begin(StateScan *scan);
extern bool state_scan_next(StateScan *scan, DeviceState *out, int *n);
extern bool state_lookup(const char *device_id, DeviceState *out);
extern void state_get_info(int64 *devices, int64 *capacity,
						   int64 *evicted_total);
extern void state_reset_counters(void);

/* ----------------------------------------------------------------
 * stats.c: per-worker statistics slots in shared memory (SPEC §6)
 * ----------------------------------------------------------------
 */

/* What a worker is doing; stats() shows the names of stats_status_name. */
typedef enum WorkerStatus
{
	WORKER_STATUS_STOPPED = 0,	/* not running (pid NULL) */
	WORKER_STATUS_WAITING_FOR_EXTENSION,
	WORKER_STATUS_CONNECTING,	/* to the database or to Redis */
	WORKER_STATUS_RUNNING,		/* consuming or waiting for entries */
	WORKER_STATUS_BACKOFF,		/* waiting after a failure */
	WORKER_STATUS_PAUSED		/* processor.enabled = off */
} WorkerStatus;

#define STATS_CONSUMER_MAX	256	/* bytes, with the NUL */
#define STATS_ERROR_MAX		256	/* bytes, with the NUL */

/* A copy of one worker's slot, for readers. */
typedef struct WorkerStats
{
	int			pid;			/* 0: not running */
	WorkerStatus status;
	bool		redis_connected;
	bool		group_known;	/* pending and group_pending are known */
	bool		lag_known;
	char		consumer[STATS_CONSUMER_MAX];
	int64		entries_read;
	int64		inserted;
	int64		duplicates;
	int64		dead_lettered;
	int64		batches;
	int64		db_retries;
	int64		redis_reconnects;
	int64		claimed;
	TimestampTz last_batch_at;	/* 0: never */
	int64		lag;
	int64		pending;
	int64		group_pending;
	char		last_error[STATS_ERROR_MAX];
	TimestampTz last_error_at;	/* 0: never */
	TimestampTz stats_reset;
} WorkerStats;

/* Called by the worker (no-ops until stats_worker_attach). */
extern void stats_worker_attach(int number);
extern void stats_set_status(WorkerStatus status);
extern void stats_set_consumer(const char *consumer);
extern void stats_set_redis_connected(bool connected);
extern void stats_set_error(const char *msg);
extern void stats_add_read(int64 n);
extern void stats_add_batch(const WriteResult *result);
extern void stats_add_db_retry(void);
extern void stats_add_reconnect(void);
extern void stats_add_claimed(int64 n);
extern void stats_set_group_info(bool lag_known, int64 lag, int64 pending,
								 int64 group_pending);

/* Called by SQL functions. */
extern int	stats_worker_count(void);
extern void stats_read(int number, WorkerStats *out);
extern const char *stats_status_name(WorkerStatus status);
extern void stats_reset_all(void);

/* Called by state.c's shared-memory hooks. */
extern Size stats_shmem_size(void);
extern void stats_shmem_init(void);

/* ----------------------------------------------------------------
 * worker.c
 * ----------------------------------------------------------------
 */
extern PGDLLEXPORT void processor_worker_main(Datum main_arg);

#endif							/* PROCESSOR_H */
