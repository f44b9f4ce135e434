/* timer: monotonic wall-clock time for measurements and deadlines. */
#ifndef MOE_CORE_TIMER_H
#define MOE_CORE_TIMER_H

/* Seconds since an arbitrary fixed point; never goes backwards. */
double timer_now(void);

#endif /* MOE_CORE_TIMER_H */
