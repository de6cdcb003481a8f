/* What every C file hetc generates includes first (backends/c): the
 * standard headers and the run-time failure status of a call.
 *
 * A kernel that meets bad data (an index out of range, an emulated fault)
 * records the first failure in the status of the call it serves: hetc_run
 * returns nonzero and hetc_error(ctx) gives the text. Each context has its
 * own status, so calls running at once in several threads never see each
 * other's failures. hetc_run points hetc_status_now (per thread) at it; a
 * kernel whose parallel region can fail hands it on to its worker threads. */
#ifndef HETC_STATUS_H
#define HETC_STATUS_H
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    volatile int failed;
    char text[256];
} hetc_status;
#if defined(HETC_KERNEL_LIBRARY) /* x86's kernel library: one pointer its models share */
__thread hetc_status *hetc_status_now;
#elif defined(HETC_PREBUILT_KERNELS)
extern __thread hetc_status *hetc_status_now;
#else
static __thread hetc_status *hetc_status_now;
#endif

static void hetc_fail(const char *fmt, ...) {
    hetc_status *s = hetc_status_now;
    if (!s || !__sync_bool_compare_and_swap(&s->failed, 0, 1)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->text, sizeof s->text, fmt, ap);
    va_end(ap);
}

#endif
