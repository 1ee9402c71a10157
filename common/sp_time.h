/*
 * sp_time: the two clocks sealpush uses, in milliseconds. Monotonic time for timeouts and
 * deadlines (never jumps); wall-clock time only where another system must agree on it (message
 * expiry kept in Redis).
 */
#ifndef SP_TIME_H
#define SP_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t sp_time_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline uint64_t sp_time_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
