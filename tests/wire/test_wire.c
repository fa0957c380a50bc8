#include "testutil.h"

#include <sys/socket.h>
#include <unistd.h>

#include "cloister/wire.h"

static void test_frames(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct cl_buf b;
    cl_buf_init(&b, 1 << 20, CL_BUF_NONE);
    enum cl_wire_type t;
    unsigned fl, st;
    cl_err code;
    assert_ok(cl_wire_send(sv[0], CL_WIRE_ATTEST_REQ, 0, "nonce", 5));
    assert_ok(cl_wire_send(sv[0], CL_WIRE_OHTTP_REQ, CL_WIRE_FLAG_CHUNKED, NULL, 0));
    assert_ok(cl_wire_send_error(sv[0], 400, CL_E_PROTO_OHTTP_AUTH));
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_ATTEST_REQ);
    assert_int_equal(b.len, 5);
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_OHTTP_REQ);
    assert_int_equal(fl, CL_WIRE_FLAG_CHUNKED);
    assert_int_equal(b.len, 0);
    assert_ok(cl_wire_recv(sv[1], 100, &t, &fl, &b));
    assert_int_equal(t, CL_WIRE_ERROR);
    assert_ok(cl_wire_parse_error(&b, &st, &code));
    assert_int_equal(st, 400);
    assert_int_equal(code, CL_E_PROTO_OHTTP_AUTH);
    /* over the limit (a framing error ends the connection: the stream is
     * out of step, so each case uses a fresh pair) */
    assert_ok(cl_wire_send(sv[0], CL_WIRE_ATTEST_REQ, 0, "0123456789", 10));
    assert_err(cl_wire_recv(sv[1], 9, &t, &fl, &b), CL_E_PROTO_LIMIT);
    close(sv[0]);
    close(sv[1]);
    /* bad type and reserved bits */
    const uint8_t bad[2][8] = {{0x42, 0, 0, 0, 0, 0, 0, 0}, {1, 0x80, 0, 0, 0, 0, 0, 0}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        assert_int_equal(write(sv[0], bad[i], 8), 8);
        assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_PROTO_REQUEST_INVALID);
        close(sv[0]);
        close(sv[1]);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* truncated payload, then clean EOF */
    const uint8_t part[10] = {1, 0, 0, 0, 0, 0, 0, 9, 'a', 'b'};
    assert_int_equal(write(sv[0], part, 10), 10);
    close(sv[0]);
    assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_PROTO_OHTTP_MALFORMED);
    assert_err(cl_wire_recv(sv[1], 100, &t, &fl, &b), CL_E_CORE_EOF);
    close(sv[1]);
    cl_buf_free(&b);
    assert_string_equal(cl_wire_type_name(CL_WIRE_END), "end");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_frames)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
