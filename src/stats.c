/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Per-worker statistics slots in shared memory: what processor.stats()
 *	  and the view processor.worker_stats show (SPEC §6).
 *
 * One slot per configured worker (processor.workers at startup), numbered
 * from 1 like the workers.  Worker N is the only writer of slot N; SQL
 * functions read copies.  Each slot has its own spinlock, held only to copy
 * or change a few fields (no calls, no ERROR inside).  stats_reset, shared
 * by all slots, is guarded by the spinlock of the control block.
 *
 * A worker calls stats_worker_attach(number) first; that records its pid
 * and registers an on_shmem_exit callback which clears the pid and sets
 * the status "stopped" however the process ends (short of a crash, after
 * which the postmaster re-creates shared memory anyway).  Every other
 * stats_* setter is a no-op in a process that has not attached.
 *
 * Counters are cumulative across worker restarts; processor.reset_stats()
 * zeroes them (and state.c's evicted_total) and sets stats_reset.  It does
 * not touch what describes the present (status, pid, consumer, Redis
 * connection, lag and pending figures) nor the last_* fields.
 *
 * Strings are stored as UTF-8 (the worker's database is UTF-8 by rule),
 * cut on a character boundary, invalid bytes replaced by '?', so that a
 * reader may build text values from them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "processor.h"

/* One worker's slot. */
typedef struct StatsSlot
{
	slock_t		mutex;			/* guards data */
	WorkerStats data;
} StatsSlot;

/* The control block and the slots. */
typedef struct StatsControl
{
	slock_t		mutex;			/* guards stats_reset */
	TimestampTz stats_reset;
	int			nslots;
	StatsSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} StatsControl;

static StatsControl *stats = NULL;

/* This process's slot, once stats_worker_attach has run. */
static StatsSlot *my_slot = NULL;

static const char *const status_names[] = {
	[WORKER_STATUS_STOPPED] = "stopped",
	[WORKER_STATUS_WAITING_FOR_EXTENSION] = "waiting_for_extension",
	[WORKER_STATUS_CONNECTING] = "connecting",
	[WORKER_STATUS_RUNNING] = "running",
	[WORKER_STATUS_BACKOFF] = "backoff",
	[WORKER_STATUS_PAUSED] = "paused",
};

/* ----------------------------------------------------------------
 * Shared memory
 * ----------------------------------------------------------------
 */

/*
 * Bytes needed for processor.workers slots.
 */
Size
stats_shmem_size(void)
{
	return add_size(offsetof(StatsControl, slots),
					mul_size(Max(processor_workers, 0), sizeof(StatsSlot)));
}

/*
 * Create (postmaster) or attach to the slots.  Caller holds
 * AddinShmemInitLock (state.c's startup hook).
 */
void
stats_shmem_init(void)
{
	bool		found;
	int			i;

	stats = ShmemInitStruct("processor worker stats", stats_shmem_size(),
							&found);
	if (found)
		return;

	memset(stats, 0, stats_shmem_size());
	SpinLockInit(&stats->mutex);
	stats->stats_reset = GetCurrentTimestamp();
	stats->nslots = Max(processor_workers, 0);
	for (i = 0; i < stats->nslots; i++)
	{
		SpinLockInit(&stats->slots[i].mutex);
		stats->slots[i].data.status = WORKER_STATUS_STOPPED;
	}
}

/* ----------------------------------------------------------------
 * The worker's side
 * ----------------------------------------------------------------
 */

/*
 * Copy src into dst (size bytes with the NUL) as valid UTF-8: cut on a
 * character boundary, invalid bytes replaced by '?'.  Runs before any
 * spinlock is taken.
 */
static void
copy_utf8(char *dst, const char *src, int size)
{
	int			srclen;
	int			len;
	int			valid;

	if (src == NULL)
		src = "";
	srclen = strlen(src);
	/* an invalid lead byte at the end can make the clip overshoot */
	len = Min(pg_encoding_mbcliplen(PG_UTF8, src, srclen, size - 1), srclen);
	memcpy(dst, src, len);
	dst[len] = '\0';
	while ((valid = pg_encoding_verifymbstr(PG_UTF8, dst, len)) < len)
		dst[valid] = '?';
}

/*
 * on_shmem_exit callback: the worker is gone.
 */
static void
stats_worker_detach(int code, Datum arg)
{
	StatsSlot  *slot = my_slot;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->data.pid = 0;
	slot->data.status = WORKER_STATUS_STOPPED;
	slot->data.redis_connected = false;
	slot->data.group_known = false;
	slot->data.lag_known = false;
	SpinLockRelease(&slot->mutex);
	my_slot = NULL;
}

/*
 * stats_worker_attach
 *		Take slot "number" (1 .. processor.workers) for this process: set
 *		the pid and the status "connecting", and arrange for the slot to say
 *		"stopped" when the process exits.  Does nothing without shared
 *		memory or for a number without a slot.
 */
void
stats_worker_attach(int number)
{
	StatsSlot  *slot;

	if (stats == NULL || number < 1 || number > stats->nslots || my_slot)
		return;

	slot = &stats->slots[number - 1];
	SpinLockAcquire(&slot->mutex);
	slot->data.pid = MyProcPid;
	slot->data.status = WORKER_STATUS_CONNECTING;
	slot->data.redis_connected = false;
	slot->data.group_known = false;
	slot->data.lag_known = false;
	SpinLockRelease(&slot->mutex);

	my_slot = slot;
	on_shmem_exit(stats_worker_detach, (Datum) 0);
}

/*
 * stats_set_status
 *		Record what the worker is doing now.
 */
void
stats_set_status(WorkerStatus status)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.status = status;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_set_consumer
 *		Record the Redis consumer name the worker uses (cut to 255 bytes).
 */
void
stats_set_consumer(const char *consumer)
{
	char		buf[STATS_CONSUMER_MAX];

	if (my_slot == NULL)
		return;
	copy_utf8(buf, consumer, sizeof(buf));
	SpinLockAcquire(&my_slot->mutex);
	memcpy(my_slot->data.consumer, buf, sizeof(buf));
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_set_redis_connected
 *		Record whether the worker holds a Redis connection.  Losing it also
 *		forgets lag and pending figures, which only Redis can refresh.
 */
void
stats_set_redis_connected(bool connected)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.redis_connected = connected;
	if (!connected)
	{
		my_slot->data.group_known = false;
		my_slot->data.lag_known = false;
	}
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_set_error
 *		Record the latest error (cut to 255 bytes) and its time.
 */
void
stats_set_error(const char *msg)
{
	char		buf[STATS_ERROR_MAX];
	TimestampTz now = GetCurrentTimestamp();

	if (my_slot == NULL)
		return;
	copy_utf8(buf, msg, sizeof(buf));
	SpinLockAcquire(&my_slot->mutex);
	memcpy(my_slot->data.last_error, buf, sizeof(buf));
	my_slot->data.last_error_at = now;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_add_read
 *		Count entries read from Redis (history, new, redeliveries alike).
 */
void
stats_add_read(int64 n)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.entries_read += n;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_add_batch
 *		Count a committed batch and its outcome.  Call only after COMMIT.
 */
void
stats_add_batch(const WriteResult *result)
{
	TimestampTz now = GetCurrentTimestamp();

	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.inserted += result->inserted;
	my_slot->data.duplicates += result->duplicates;
	my_slot->data.dead_lettered += result->dead_lettered;
	my_slot->data.batches++;
	my_slot->data.last_batch_at = now;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_add_db_retry
 *		Count a batch transaction that failed and will be retried.
 */
void
stats_add_db_retry(void)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.db_retries++;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_add_reconnect
 *		Count a Redis reconnection (a connection made after a lost one).
 */
void
stats_add_reconnect(void)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.redis_reconnects++;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_add_claimed
 *		Count entries taken over from other consumers by XAUTOCLAIM.
 */
void
stats_add_claimed(int64 n)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.claimed += n;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * stats_set_group_info
 *		Record the figures of the latest XINFO GROUPS poll: the group's lag
 *		(lag_known false when Redis reports none), this consumer's pending
 *		count and the group's.
 */
void
stats_set_group_info(bool lag_known, int64 lag, int64 pending,
					 int64 group_pending)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->data.group_known = true;
	my_slot->data.lag_known = lag_known;
	my_slot->data.lag = lag_known ? lag : 0;
	my_slot->data.pending = pending;
	my_slot->data.group_pending = group_pending;
	SpinLockRelease(&my_slot->mutex);
}

/* ----------------------------------------------------------------
 * Readers (SQL functions)
 * ----------------------------------------------------------------
 */

/*
 * stats_worker_count
 *		Number of slots (processor.workers at startup); 0 without shared
 *		memory.
 */
int
stats_worker_count(void)
{
	return stats ? stats->nslots : 0;
}

/*
 * stats_read
 *		Copy slot "number" (1 .. stats_worker_count()) into *out, with the
 *		shared stats_reset.
 */
void
stats_read(int number, WorkerStats *out)
{
	StatsSlot  *slot;

	Assert(stats != NULL && number >= 1 && number <= stats->nslots);
	slot = &stats->slots[number - 1];

	SpinLockAcquire(&slot->mutex);
	*out = slot->data;
	SpinLockRelease(&slot->mutex);

	SpinLockAcquire(&stats->mutex);
	out->stats_reset = stats->stats_reset;
	SpinLockRelease(&stats->mutex);
}

/*
 * stats_status_name
 *		The name processor.stats() shows for a status.
 */
const char *
stats_status_name(WorkerStatus status)
{
	if ((int) status < 0 || (int) status >= (int) lengthof(status_names))
		return "unknown";
	return status_names[status];
}

/*
 * stats_reset_all
 *		processor.reset_stats(): zero every worker's counters and
 *		evicted_total, and set stats_reset to now.  Devices stay.
 */
void
stats_reset_all(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	for (i = 0; i < stats->nslots; i++)
	{
		WorkerStats *d = &stats->slots[i].data;

		SpinLockAcquire(&stats->slots[i].mutex);
		d->entries_read = 0;
		d->inserted = 0;
		d->duplicates = 0;
		d->dead_lettered = 0;
		d->batches = 0;
		d->db_retries = 0;
		d->redis_reconnects = 0;
		d->claimed = 0;
		SpinLockRelease(&stats->slots[i].mutex);
	}
	state_reset_counters();

	SpinLockAcquire(&stats->mutex);
	stats->stats_reset = now;
	SpinLockRelease(&stats->mutex);
}
