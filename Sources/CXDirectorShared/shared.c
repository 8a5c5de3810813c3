// Compile-time checks that the shared structs have the sizes both sides rely on.
#include "xdirector_shared.h"

_Static_assert(sizeof(struct xd_service_key) == 20, "xd_service_key must be 20 bytes");
_Static_assert(sizeof(struct xd_service_value) == 8, "xd_service_value must be 8 bytes");
_Static_assert(sizeof(struct xd_director) == 24, "xd_director must be 24 bytes");
_Static_assert(sizeof(struct xd_heartbeat) == 64, "xd_heartbeat must be one cache line");
