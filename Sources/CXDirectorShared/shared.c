// Compile-time checks that every shared struct has the size and field offsets both sides rely on (the
// Swift side checks the same figures in SharedLayoutTests), and the XDP counters' names.
#include <stddef.h>
#include "xdirector_shared.h"

#define XD_ASSERT_SIZE(type, bytes) _Static_assert(sizeof(struct type) == (bytes), #type " must be " #bytes " bytes")
#define XD_ASSERT_OFFSET(type, field, at) \
    _Static_assert(offsetof(struct type, field) == (at), #type "." #field " must be at " #at)

XD_ASSERT_SIZE(xd_service_key, 20);
XD_ASSERT_OFFSET(xd_service_key, addr, 0);
XD_ASSERT_OFFSET(xd_service_key, port, 16);
XD_ASSERT_OFFSET(xd_service_key, proto, 18);
XD_ASSERT_OFFSET(xd_service_key, family, 19);

XD_ASSERT_SIZE(xd_service_value, 8);
XD_ASSERT_OFFSET(xd_service_value, index, 0);
XD_ASSERT_OFFSET(xd_service_value, flags, 4);

XD_ASSERT_SIZE(xd_local_addr_key, 20);
XD_ASSERT_OFFSET(xd_local_addr_key, addr, 0);
XD_ASSERT_OFFSET(xd_local_addr_key, family, 16);
XD_ASSERT_OFFSET(xd_local_addr_key, pad, 17);

XD_ASSERT_SIZE(xd_fragment_key, 20);
XD_ASSERT_OFFSET(xd_fragment_key, addr, 0);
XD_ASSERT_OFFSET(xd_fragment_key, proto, 16);
XD_ASSERT_OFFSET(xd_fragment_key, family, 17);
XD_ASSERT_OFFSET(xd_fragment_key, role, 18);
XD_ASSERT_OFFSET(xd_fragment_key, pad, 19);

XD_ASSERT_SIZE(xd_real_key, 40);
XD_ASSERT_OFFSET(xd_real_key, service, 0);
XD_ASSERT_OFFSET(xd_real_key, addr, 20);
XD_ASSERT_OFFSET(xd_real_key, port, 36);
XD_ASSERT_OFFSET(xd_real_key, family, 38);
XD_ASSERT_OFFSET(xd_real_key, pad, 39);

XD_ASSERT_SIZE(xd_real_value, 16);
XD_ASSERT_OFFSET(xd_real_value, weight, 0);
XD_ASSERT_OFFSET(xd_real_value, method, 4);
XD_ASSERT_OFFSET(xd_real_value, tunnel, 5);
XD_ASSERT_OFFSET(xd_real_value, flags, 6);
XD_ASSERT_OFFSET(xd_real_value, upper_threshold, 8);
XD_ASSERT_OFFSET(xd_real_value, lower_threshold, 12);

XD_ASSERT_SIZE(xd_director, 24);
XD_ASSERT_OFFSET(xd_director, pid, 0);
XD_ASSERT_OFFSET(xd_director, flags, 4);
XD_ASSERT_OFFSET(xd_director, start_time, 8);
XD_ASSERT_OFFSET(xd_director, grace_ns, 16);

XD_ASSERT_SIZE(xd_heartbeat, 64);
XD_ASSERT_OFFSET(xd_heartbeat, ns, 0);
XD_ASSERT_OFFSET(xd_heartbeat, pad, 8);

const char *xd_xdp_counter_name(unsigned int counter)
{
    static const char *const names[] = {
#define XD_XDP_COUNTER_NAME(name, text) [XD_XDP_##name] = text,
        XD_XDP_COUNTERS(XD_XDP_COUNTER_NAME)
#undef XD_XDP_COUNTER_NAME
    };
    return counter < XD_XDP_COUNTER_COUNT ? names[counter] : NULL;
}
