/*-------------------------------------------------------------------------
 *
 * session.c
 *	  The worker's Redis side: connection and consumer group, what to read
 *	  next (own history after every connect, claims from dead consumers,
 *	  new entries), and the group figures of processor.stats().  Keeping
 *	  the entries we hold is session_ownership.c's.
 *
 * Every failure of a Redis call goes through session_failed: NOGROUP
 * re-creates the group at 0, an error reply backs off, anything else drops
 * the connection (the next step reconnects and re-reads history) and backs
 * off.  Nothing here holds hiredis memory; replies arrive palloc'd in the
 * batch context (redis.c, stream.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "common/string.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker_internal.h"

/* ----------------------------------------------------------------
 * Redis connection
 * ----------------------------------------------------------------
 */

/*
 * Read the password: processor.redis_password_file wins over
 * processor.redis_password.  Returns NULL with *error set when the file
 * cannot be read.  The password never appears in a message.
 */
static char *
read_password(char **error)
{
	FILE	   *f;
	char		buf[1024];
	size_t		len;
	bool		failed;
	char	   *password;

	if (processor_redis_password_file[0] == '\0')
		return pstrdup(processor_redis_password);

	f = AllocateFile(processor_redis_password_file, "r");
	if (f == NULL)
	{
		*error = psprintf("could not open processor.redis_password_file \"%s\": %m",
						  processor_redis_password_file);
		return NULL;
	}
	len = fread(buf, 1, sizeof(buf) - 1, f);
	failed = ferror(f);
	FreeFile(f);
	buf[len] = '\0';
	if (failed)
	{
		explicit_bzero(buf, sizeof(buf));
		*error = psprintf("could not read processor.redis_password_file \"%s\"",
						  processor_redis_password_file);
		return NULL;
	}
	/* a trailing newline is not part of the password */
	(void) pg_strip_crlf(buf);
	password = pstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return password;
}

/*
 * A string identifying the Redis settings, to tell after a reload whether
 * the connection must be remade.  Holds no secret, only the password file
 * name and whether a password is set.
 */
char *
session_settings_key(void)
{
	return psprintf("%s|%d|%s|%d|%s|%u",
					processor_redis_host, processor_redis_port,
					processor_redis_user, processor_redis_db,
					processor_redis_password_file,
					(unsigned) hash_bytes((const unsigned char *) processor_redis_password,
										  strlen(processor_redis_password)));
}

/*
 * Drop the Redis connection; the next step reconnects and re-reads history.
 */
void
session_disconnect(Worker *w)
{
	if (w->redis)
		redis_disconnect(w->redis);
	w->redis = NULL;
	stats_set_redis_connected(false);
	w->in_redis = false;
	w->group_ready = false;
}

/*
 * Connect to Redis if we are not connected.  Returns false after a failed
 * attempt (already logged and waited out).
 */
static bool
connect_redis(Worker *w)
{
	char	   *error = NULL;
	char	   *password;

	if (w->redis)
		return true;

	stats_set_status(WORKER_STATUS_CONNECTING);
	password = read_password(&error);
	if (password != NULL)
	{
		w->in_redis = true;
		w->redis = redis_connect(processor_redis_host, processor_redis_port,
								 processor_redis_user, password,
								 processor_redis_db,
								 processor_redis_connect_timeout,
								 processor_redis_timeout, &error);
		w->in_redis = false;
		explicit_bzero(password, strlen(password));
	}
	if (w->redis == NULL)
	{
		/* a reload cut the attempt short: serve it and try again at once */
		if (!ConfigReloadPending)
			worker_fail(w, error ? error : "could not connect to Redis");
		return false;
	}

	redis_set_max_reply_bytes(w->redis, processor_max_reply_bytes);
	strlcpy(w->claim_cursor, "0-0", sizeof(w->claim_cursor));
	worker_set_string(&w->redis_key, session_settings_key());
	stats_set_redis_connected(true);
	if (w->ever_connected)
		stats_add_reconnect();
	w->ever_connected = true;
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
	ereport(LOG,
			(errmsg("connected to Redis %s:%d",
					processor_redis_host, processor_redis_port)));
	return true;
}

/*
 * Create the consumer group if needed (BUSYGROUP counts as success).
 */
static bool
ensure_group(Worker *w)
{
	const char *start = w->group_from_zero ? "0" : processor_group_start_id;
	RedisResult rc;

	if (w->group_ready)
		return true;

	w->in_redis = true;
	rc = redis_ensure_group(w->redis, w->stream, w->group, start);
	w->in_redis = false;
	if (rc != REDIS_OK)
	{
		char	   *msg = psprintf("could not create consumer group \"%s\" on \"%s\": %s",
								   w->group, w->stream,
								   redis_last_error(w->redis));

		if (rc != REDIS_ERROR_REPLY)
			session_disconnect(w);
		worker_fail(w, msg);
		return false;
	}

	w->group_ready = true;
	/* from now on a lost group (Redis restarted empty) comes back at 0 */
	w->group_from_zero = true;
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
	ereport(LOG,
			(errmsg("consumer group \"%s\" on \"%s\" ready (consumer \"%s\")",
					w->group, w->stream, w->consumer)));
	if (!w->announced_ready)
	{
		ereport(LOG, (errmsg("processor ready")));
		w->announced_ready = true;
	}
	return true;
}

/*
 * Connected, and the group exists.
 */
bool
session_ensure(Worker *w)
{
	return connect_redis(w) && ensure_group(w);
}

/*
 * React to a Redis failure of a stream command: NOGROUP re-creates the
 * group at 0; anything else drops the connection and backs off.
 */
void
session_failed(Worker *w, RedisResult rc, const char *what)
{
	char	   *msg = psprintf("%s failed: %s", what, redis_last_error(w->redis));

	if (rc == REDIS_NOGROUP)
	{
		ereport(LOG,
				(errmsg("consumer group \"%s\" on \"%s\" is gone; re-creating it at 0",
						w->group, w->stream)));
		w->group_ready = false;
		w->group_from_zero = true;
		return;
	}
	if (rc == REDIS_INTERRUPTED)
	{
		/* a reload arrived during a blocked read: reconnect after it */
		session_disconnect(w);
		return;
	}
	if (rc != REDIS_ERROR_REPLY)
		session_disconnect(w);
	worker_fail(w, msg);
}

/* ----------------------------------------------------------------
 * Stream, group and consumer switch after a reload
 * ----------------------------------------------------------------
 */

/*
 * Start consuming what the settings now name.  Called once the old
 * consumer's pending entries are drained, or when that failed.
 */
void
session_apply_switch(Worker *w)
{
	char	   *consumer = worker_consumer_name(w->number);

	worker_set_string(&w->stream, processor_stream);
	worker_set_string(&w->group, processor_group);
	worker_set_string(&w->consumer, consumer);
	stats_set_consumer(consumer);
	w->switch_pending = false;
	w->group_ready = false;
	session_forget_parked(w);
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
}


/* ----------------------------------------------------------------
 * Reading: new entries, history, claims, oversized replies
 * ----------------------------------------------------------------
 */

/*
 * Make entries (palloc'd in batch_cxt) the batch in memory.
 */
static void
set_batch(Worker *w, StreamEntry *entries, int n)
{
	Batch	   *b = &w->batch;

	b->present = true;
	b->entries = entries;
	b->nentries = n;
	b->stream = MemoryContextStrdup(w->batch_cxt, w->stream);
	b->group = MemoryContextStrdup(w->batch_cxt, w->group);
	b->touched_at = GetCurrentTimestamp();
}

/*
 * A reply was larger than processor.max_reply_bytes and the connection is
 * gone.  New reads halve their COUNT; in history (COUNT 1 already) the
 * entry itself is too large and is dead-lettered by id after the
 * reconnect.
 */
static void
reply_too_large(Worker *w)
{
	if (w->history)
		w->oversized_pending = true;
	else
		w->read_count = Max(w->read_count / 2, 1);
	session_disconnect(w);
	worker_fail(w, psprintf("reply larger than processor.max_reply_bytes (%d bytes); reading %d entries at a time",
								 processor_max_reply_bytes,
								 w->history ? 1 : w->read_count));
}

/*
 * XREADGROUP into batch_cxt.  Returns false after a failure (handled).
 */
static bool
read_entries(Worker *w, int count, int block_ms, const char *start,
			 StreamEntry **entries, int *n)
{
	MemoryContext old;
	RedisResult rc;

	old = MemoryContextSwitchTo(w->batch_cxt);
	w->in_redis = true;
	rc = redis_read_group(w->redis, w->stream, w->group, w->consumer,
						  count, block_ms, start, entries, n);
	while (rc == REDIS_INTERRUPTED)
	{
		/*
		 * A reload during BLOCK: serve it now (SPEC §3: within 100 ms),
		 * then collect the reply unless the reload dropped the connection.
		 */
		MemoryContextSwitchTo(old);
		worker_reload_config(w);
		if (w->redis != NULL && w->switch_pending)
		{
			/* do not sit out a BLOCK on a stream we are leaving */
			session_disconnect(w);
		}
		if (w->redis == NULL)
		{
			batch_drop(w);
			return false;
		}
		MemoryContextSwitchTo(w->batch_cxt);
		rc = redis_read_group_resume(w->redis, entries, n);
	}
	w->in_redis = false;
	MemoryContextSwitchTo(old);

	if (rc == REDIS_OK)
	{
		stats_add_read(*n);
		return true;
	}
	batch_drop(w);
	if (rc == REDIS_REPLY_TOO_LARGE)
		reply_too_large(w);
	else
	{
		if (w->switch_pending)
			session_apply_switch(w);	/* draining the old stream is best effort */
		session_failed(w, rc, "XREADGROUP");
	}
	return false;
}

/*
 * Fetch delivery counts for entries read from history or claimed.
 * Returns false after a failure (handled; the batch is dropped, and its
 * entries come back from history).
 */
static bool
fetch_delivery_counts(Worker *w, StreamEntry *entries, int n)
{
	MemoryContext old;
	RedisResult rc;

	old = MemoryContextSwitchTo(w->batch_cxt);
	w->in_redis = true;
	rc = stream_delivery_counts(w->redis, w->stream, w->group, w->consumer,
								entries, n);
	w->in_redis = false;
	MemoryContextSwitchTo(old);
	if (rc == REDIS_OK)
		return true;
	batch_drop(w);
	session_failed(w, rc, "XPENDING");
	return false;
}

/*
 * Read this consumer's next pending entry.  One at a time: every entry
 * here has been delivered before (SPEC §4, poison by crash), so each gets a
 * transaction of its own and cannot take batch-mates down with it.
 */
static void
read_history(Worker *w)
{
	StreamEntry *entries;
	int			n;

	if (!read_entries(w, 1, -1, w->cursor, &entries, &n))
		return;
	if (n == 0)
	{
		w->history = false;
		return;
	}
	strlcpy(w->cursor, entries[n - 1].id, sizeof(w->cursor));
	if (fetch_delivery_counts(w, entries, n))
		set_batch(w, entries, n);
}

/*
 * The history's next entry cannot be read within processor.max_reply_bytes:
 * dead-letter it by id, without its fields.
 */
static void
take_oversized(Worker *w)
{
	StreamEntry *e;
	char	   *id = NULL;
	RedisResult rc;
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);

	w->in_redis = true;
	rc = stream_first_pending(w->redis, w->stream, w->group, w->consumer,
							  w->cursor, &id);
	w->in_redis = false;
	MemoryContextSwitchTo(old);
	if (rc != REDIS_OK)
	{
		batch_drop(w);
		session_failed(w, rc, "XPENDING");
		return;
	}
	w->oversized_pending = false;
	if (id == NULL)
		return;

	e = MemoryContextAllocZero(w->batch_cxt, sizeof(StreamEntry));
	e->id = id;
	e->nfields = -1;
	e->error = MemoryContextStrdup(w->batch_cxt,
								   psprintf("entry larger than processor.max_reply_bytes (%d bytes)",
											processor_max_reply_bytes));
	strlcpy(w->cursor, id, sizeof(w->cursor));
	if (fetch_delivery_counts(w, e, 1))
		set_batch(w, e, 1);
}

/*
 * Is a claim scan due?  One runs every processor.claim_interval and goes
 * on, step by step, until XAUTOCLAIM's cursor comes back to 0-0.
 */
static bool
claim_due(Worker *w)
{
	if (processor_claim_min_idle <= 0)
		return false;
	if (strcmp(w->claim_cursor, "0-0") != 0)
		return true;
	return TimestampDifferenceExceeds(w->last_claim, GetCurrentTimestamp(),
									  processor_claim_interval);
}

/*
 * Claim one entry idle for longer than processor.claim_min_idle from any
 * consumer of the group (a vanished one, typically), plus the ids Redis
 * found deleted on the way, which become "entry no longer in stream" dead
 * letters.  Claimed entries have been delivered before: one at a time.
 */
static void
claim_batch(Worker *w)
{
	StreamEntry *entries;
	StreamEntry *all;
	char	  **deleted;
	int			n;
	int			ndeleted;
	int			i;
	RedisResult rc;
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);

	w->in_redis = true;
	rc = stream_autoclaim(w->redis, w->stream, w->group, w->consumer,
						  processor_claim_min_idle, w->claim_cursor, 1,
						  &entries, &n, &deleted, &ndeleted);
	w->in_redis = false;
	if (rc == REDIS_OK && strcmp(w->claim_cursor, "0-0") == 0)
		w->last_claim = GetCurrentTimestamp();
	if (rc != REDIS_OK || n + ndeleted == 0)
	{
		MemoryContextSwitchTo(old);
		batch_drop(w);
		strlcpy(w->claim_cursor, "0-0", sizeof(w->claim_cursor));
		if (rc != REDIS_OK)
			session_failed(w, rc, "XAUTOCLAIM");
		return;
	}

	all = palloc0(sizeof(StreamEntry) * (n + ndeleted));
	memcpy(all, entries, sizeof(StreamEntry) * n);
	for (i = 0; i < ndeleted; i++)
	{
		all[n + i].id = deleted[i];
		all[n + i].nfields = -1;
	}
	MemoryContextSwitchTo(old);

	stats_add_read(n + ndeleted);
	stats_add_claimed(n + ndeleted);
	ereport(DEBUG1,
			(errmsg("processor worker %d claimed %d idle entries", w->number,
					n + ndeleted)));
	if (fetch_delivery_counts(w, all, n))
		set_batch(w, all, n + ndeleted);
}

/*
 * Read new entries (">"), blocking up to processor.block_time.
 */
static void
read_new(Worker *w)
{
	StreamEntry *entries;
	int			n;

	if (w->read_count <= 0 || w->read_count > processor_batch_size)
		w->read_count = processor_batch_size;
	if (!read_entries(w, w->read_count, processor_block_time, ">",
					  &entries, &n))
		return;
	w->backoff_ms = 0;
	/* after an oversized reply, grow back */
	w->read_count = Min(w->read_count * 2, processor_batch_size);
	if (n > 0)
		set_batch(w, entries, n);
}

/*
 * Read the next batch: this consumer's history first (after every
 * (re)connect), then claims when due, then new entries.
 */
void
session_read_batch(Worker *w)
{
	if (!w->history && w->switch_pending)
		session_apply_switch(w);
	else if (w->oversized_pending)
		take_oversized(w);
	else if (w->history)
		read_history(w);
	else if (claim_due(w))
		claim_batch(w);
	else
		read_new(w);
}

/* ----------------------------------------------------------------
 * Group figures for processor.stats(): lag and pending
 * ----------------------------------------------------------------
 */

/*
 * Ask Redis for the group's lag and pending counts, at most once a second,
 * and publish them.  A failure only leaves the figures as they were; a
 * broken connection is dropped.
 */
void
session_poll_group_info(Worker *w)
{
	int64		lag;
	int64		group_pending;
	int64		pending;
	RedisResult rc;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(w->last_group_poll, now, GROUP_POLL_MS))
		return;
	w->last_group_poll = now;

	w->in_redis = true;
	rc = stream_group_info(w->redis, w->stream, w->group, w->consumer,
						   &lag, &group_pending, &pending);
	w->in_redis = false;
	if (rc == REDIS_OK)
		stats_set_group_info(lag >= 0, Max(lag, 0), pending, group_pending);
	else if (rc != REDIS_ERROR_REPLY && rc != REDIS_NOGROUP)
		session_failed(w, rc, "XINFO");
}
