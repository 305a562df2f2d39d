/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The device table in shared memory (SPEC §5), and the shared-memory
 *	  hooks that size and create it together with stats.c's slots.
 *
 * Layout, all sized once at startup from processor.max_devices:
 *	- a shared hash table (dynahash, string keys) of DeviceEntry, keyed by
 *	  device_id: lookups by id;
 *	- an LRU list (lib/ilist.h dlist) through the entries, most recently
 *	  updated at the head: the tail is evicted when the table is full;
 *	- a slot array: every entry owns one slot number for as long as it is
 *	  in the table, and slots 0 .. ndevices-1 are always occupied (a device
 *	  enters at the next free slot, or at the slot of the device it
 *	  evicts).  Readers walk the slots in chunks, remembering the next slot
 *	  number, which stays meaningful across lock releases.
 *
 * Locking: one LWLock of the tranche "processor" guards everything in
 * StateControl and every DeviceEntry.  The worker takes it exclusively once
 * per batch (state_update_batch); readers take it shared for at most
 * STATE_SCAN_CHUNK slots or one lookup at a time.  Nothing that can raise an
 * ERROR runs while it is held.
 *
 * Consistency of a chunked scan (processor.devices()): every row is a
 * consistent copy of one device.  The scan shows each device that was in
 * the table when the scan began and is still there when its slot is
 * reached, exactly once; a device evicted meanwhile is missing, and a
 * device that entered after the scan began (entered_seq) is left out, so
 * that no device is ever listed twice.  Rows of different chunks are copies
 * taken at different moments: the result is not a snapshot of the whole
 * table at one instant.
 *
 * Who calls what: the worker calls state_update_batch; SQL functions
 * (funcs_monitor.c) call the readers and state_reset_counters; _PG_init
 * calls processor_shmem_install_hooks while preloading.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "processor.h"

/* Name of the LWLock tranche, as pg_stat_activity shows it. */
#define PROCESSOR_TRANCHE_NAME	"processor"

/* One device in shared memory.  The hash key (device_id) must come first. */
typedef struct DeviceEntry
{
	DeviceState state;			/* device_id first: the hash key */
	int32		slot;			/* its index in StateControl.slots */
	uint64		entered_seq;	/* when it entered the table */
	dlist_node	lru_node;		/* in StateControl.lru */
} DeviceEntry;

/* The control block of the device table. */
typedef struct StateControl
{
	LWLock	   *lock;
	int32		capacity;		/* processor.max_devices at startup */
	int32		ndevices;		/* slots 0 .. ndevices-1 are occupied */
	int64		evicted_total;
	uint64		next_seq;		/* source of entered_seq; only grows */
	dlist_head	lru;			/* head: most recently updated */
	DeviceEntry *slots[FLEXIBLE_ARRAY_MEMBER];
} StateControl;

/* Set in the postmaster by the startup hook, inherited by every child. */
static StateControl *state = NULL;
static HTAB *state_hash = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* ----------------------------------------------------------------
 * Shared memory: sizing and creation
 * ----------------------------------------------------------------
 */

/*
 * Bytes of the control block with its slot array.
 */
static Size
state_control_size(void)
{
	return add_size(offsetof(StateControl, slots),
					mul_size(processor_max_devices, sizeof(DeviceEntry *)));
}

/*
 * Bytes the device table needs: the control block, and the hash table with
 * all its entries preallocated.  About 216 bytes per device: 200 for a
 * hash element (16 of header, 184 of DeviceEntry), 8 for its bucket
 * pointer (buckets round up to a power of 2) and 8 for its slot.
 */
static Size
state_shmem_size(void)
{
	return add_size(MAXALIGN(state_control_size()),
					hash_estimate_size(processor_max_devices,
									   sizeof(DeviceEntry)));
}

/*
 * Create (postmaster, at startup or after a crash) or attach to the device
 * table.  Caller holds AddinShmemInitLock.  The hash table is created at
 * its full size (init = max, HASH_FIXED_SIZE), so inserting up to capacity
 * entries never allocates and never fails.
 */
static void
state_shmem_init(void)
{
	HASHCTL		info;
	bool		found;

	state = ShmemInitStruct("processor device state", state_control_size(),
							&found);
	if (!found)
	{
		state->lock = &(GetNamedLWLockTranche(PROCESSOR_TRANCHE_NAME))->lock;
		state->capacity = processor_max_devices;
		state->ndevices = 0;
		state->evicted_total = 0;
		state->next_seq = 0;
		dlist_init(&state->lru);
	}

	memset(&info, 0, sizeof(info));
	info.keysize = PROCESSOR_DEVICE_ID_MAX + 1;
	info.entrysize = sizeof(DeviceEntry);
	state_hash = ShmemInitHash("processor devices",
							   processor_max_devices, processor_max_devices,
							   &info,
							   HASH_ELEM | HASH_STRINGS | HASH_FIXED_SIZE);
}

/*
 * shmem_request_hook: reserve the memory of state.c and stats.c and the
 * LWLock of the tranche.
 */
static void
processor_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(state_shmem_size(), stats_shmem_size()));
	RequestNamedLWLockTranche(PROCESSOR_TRANCHE_NAME, 1);
}

/*
 * shmem_startup_hook: create or attach to the shared structures of
 * state.c and stats.c.
 */
static void
processor_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	state_shmem_init();
	stats_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * processor_shmem_install_hooks
 *		Install the hooks that size and create the shared memory of state.c
 *		and stats.c.  Call from _PG_init, only while preloading.
 */
void
processor_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = processor_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = processor_shmem_startup;
}

/*
 * state_enabled
 *		Is the shared memory there?  False in a session whose server did not
 *		preload the library.
 */
bool
state_enabled(void)
{
	return state != NULL && state_hash != NULL;
}

/* ----------------------------------------------------------------
 * The writer: one batch at a time
 * ----------------------------------------------------------------
 */

/*
 * Copy a position's values into a device's latest position.
 */
static void
set_latest_position(DeviceState *d, const Position *pos)
{
	d->ts = pos->ts;
	d->lat = pos->lat;
	d->lon = pos->lon;
	d->has_altitude = pos->has_altitude;
	d->altitude = pos->has_altitude ? pos->altitude : 0;
	d->has_speed = pos->has_speed;
	d->speed = pos->has_speed ? pos->speed : 0;
	d->has_heading = pos->has_heading;
	d->heading = pos->has_heading ? pos->heading : 0;
	d->has_satellites = pos->has_satellites;
	d->satellites = pos->has_satellites ? pos->satellites : 0;
}

/*
 * Make room for a new device when the table is full: evict the least
 * recently updated device (the LRU tail) and return its slot, now free.
 * Caller holds the lock exclusively and knows the table is not empty.
 */
static int32
evict_lru_device(void)
{
	DeviceEntry *victim;
	int32		slot;

	victim = dlist_tail_element(DeviceEntry, lru_node, &state->lru);
	slot = victim->slot;
	dlist_delete(&victim->lru_node);
	hash_search(state_hash, victim->state.device_id, HASH_REMOVE, NULL);
	state->slots[slot] = NULL;
	state->ndevices--;
	state->evicted_total++;
	return slot;
}

/*
 * Enter a device that is not in the table yet, evicting the LRU device if
 * the table is full.  Returns NULL only if the hash table has no free
 * element, which its fixed, preallocated size rules out.  Caller holds the
 * lock exclusively.
 */
static DeviceEntry *
enter_device(const char *device_id)
{
	DeviceEntry *entry;
	int32		slot;
	bool		found;

	if (state->ndevices >= state->capacity)
		slot = evict_lru_device();
	else
		slot = state->ndevices;

	/* HASH_ENTER_NULL: never an ERROR while we hold the lock */
	entry = hash_search(state_hash, device_id, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		/* cannot happen; keep slots 0 .. ndevices-1 occupied anyway */
		if (slot < state->ndevices)
		{
			state->slots[slot] = state->slots[state->ndevices];
			state->slots[slot]->slot = slot;
			state->slots[state->ndevices] = NULL;
		}
		return NULL;
	}
	Assert(!found);

	/* the hash copied the key; everything else starts from zero */
	memset((char *) entry + sizeof(entry->state.device_id), 0,
		   sizeof(DeviceEntry) - sizeof(entry->state.device_id));
	entry->slot = slot;
	entry->entered_seq = ++state->next_seq;
	state->slots[slot] = entry;
	state->ndevices++;
	dlist_push_head(&state->lru, &entry->lru_node);
	return entry;
}

/*
 * Apply one valid position.  The latest position is replaced only by a
 * strictly greater ts, so an out-of-order or replayed position never moves
 * it (or last_seen) back; every position counts and refreshes recency.
 * Caller holds the lock exclusively.
 */
static void
apply_position(const Position *pos, TimestampTz now)
{
	DeviceEntry *entry;

	/* the codec guarantees 1..64 bytes; a longer key would be truncated */
	if (pos->device_id == NULL || pos->device_id[0] == '\0' ||
		strlen(pos->device_id) > PROCESSOR_DEVICE_ID_MAX)
		return;

	entry = hash_search(state_hash, pos->device_id, HASH_FIND, NULL);
	if (entry != NULL)
	{
		if (pos->ts > entry->state.ts)
			set_latest_position(&entry->state, pos);
		entry->state.last_seen = Max(entry->state.last_seen, pos->ts);
		dlist_move_head(&state->lru, &entry->lru_node);
	}
	else
	{
		entry = enter_device(pos->device_id);
		if (entry == NULL)
			return;
		set_latest_position(&entry->state, pos);
		entry->state.last_seen = pos->ts;
	}
	entry->state.updated_at = now;
	entry->state.positions_seen++;
}

/*
 * state_update_batch
 *		Apply a batch's decoded valid positions, in order, under a single
 *		exclusive acquisition of the lock (SPEC §5).
 *
 * updated_at is the same wall-clock time for the whole batch.  Never raises
 * an ERROR; without shared memory it does nothing.
 */
void
state_update_batch(const Position *positions, int n)
{
	TimestampTz now;
	int			i;

	if (!state_enabled() || n <= 0)
		return;

	now = GetCurrentTimestamp();
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	for (i = 0; i < n; i++)
		apply_position(&positions[i], now);
	LWLockRelease(state->lock);
}

/* ----------------------------------------------------------------
 * Readers
 * ----------------------------------------------------------------
 */

/*
 * state_scan_begin
 *		Start a chunked scan of the device table.
 */
void
state_scan_begin(StateScan *scan)
{
	scan->started = false;
	scan->next_slot = 0;
	scan->scan_seq = 0;
}

/*
 * state_scan_next
 *		Copy the next chunk of devices into out[] (room for STATE_SCAN_CHUNK)
 *		and set *n to how many were copied, possibly 0.
 *
 * Each call holds the lock shared while it visits at most STATE_SCAN_CHUNK
 * slots, so the worker waits for one chunk at most.  Returns false once
 * the scan has visited every slot.  See the file header for what the scan
 * guarantees.  Caller: state_enabled() is true.
 */
bool
state_scan_next(StateScan *scan, DeviceState *out, int *n)
{
	int			end;
	int			slot;

	*n = 0;
	LWLockAcquire(state->lock, LW_SHARED);
	if (!scan->started)
	{
		scan->scan_seq = state->next_seq;
		scan->started = true;
	}
	if (scan->next_slot >= state->ndevices)
	{
		LWLockRelease(state->lock);
		return false;
	}

	end = Min(state->ndevices, scan->next_slot + STATE_SCAN_CHUNK);
	for (slot = scan->next_slot; slot < end; slot++)
	{
		DeviceEntry *entry = state->slots[slot];

		if (entry != NULL && entry->entered_seq <= scan->scan_seq)
			out[(*n)++] = entry->state;
	}
	scan->next_slot = end;
	LWLockRelease(state->lock);
	return true;
}

/*
 * state_lookup
 *		Copy one device's state into *out: a hash lookup under the shared
 *		lock.  Returns false when the device is not in the table.  Caller:
 *		state_enabled() is true; device_id is NUL-terminated UTF-8.
 */
bool
state_lookup(const char *device_id, DeviceState *out)
{
	DeviceEntry *entry;
	bool		found = false;

	/* a longer id cannot be in the table; the hash would truncate it */
	if (strlen(device_id) > PROCESSOR_DEVICE_ID_MAX)
		return false;

	LWLockAcquire(state->lock, LW_SHARED);
	entry = hash_search(state_hash, device_id, HASH_FIND, NULL);
	if (entry != NULL)
	{
		*out = entry->state;
		found = true;
	}
	LWLockRelease(state->lock);
	return found;
}

/*
 * state_get_info
 *		The figures of processor.state_info().  Caller: state_enabled().
 */
void
state_get_info(int64 *devices, int64 *capacity, int64 *evicted_total)
{
	LWLockAcquire(state->lock, LW_SHARED);
	*devices = state->ndevices;
	*capacity = state->capacity;
	*evicted_total = state->evicted_total;
	LWLockRelease(state->lock);
}

/*
 * state_reset_counters
 *		Zero evicted_total (processor.reset_stats()); the devices stay.
 *		Caller: state_enabled().
 */
void
state_reset_counters(void)
{
	LWLockAcquire(state->lock, LW_EXCLUSIVE);
	state->evicted_total = 0;
	LWLockRelease(state->lock);
}
