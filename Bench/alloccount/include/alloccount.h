/* alloccount.h: the allocation counter is used through LD_PRELOAD only; see alloccount.c. */
#ifndef XDIRECTOR_ALLOCCOUNT_H
#define XDIRECTOR_ALLOCCOUNT_H
#endif
