/*
 * http-hello: a wasi:http/proxy component (wasi:http@0.2.12) written in C.
 *
 * For every request it answers 200 with "hello from wasm\n" followed by "path: <path>\n".
 * A request for /status/<code> (100-599) is answered with that status instead, which lets a
 * test make a probe fail on purpose (e.g. a liveness probe on /status/500). Each request is
 * logged to stdout as "http-hello: <METHOD> <path> -> <status>".
 *
 * The wasi:http bindings (http_hello.h/.c) are generated from wit/ at build time by
 * `wasmkube-componentize bindgen`; see samples/build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_hello.h"

static const char *method_name(const wasi_http_types_method_t *method, char *other, size_t size) {
    static const char *const names[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                        "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    if (method->tag < sizeof names / sizeof names[0]) {
        return names[method->tag];
    }
    if (method->tag == WASI_HTTP_TYPES_METHOD_OTHER) {
        size_t len = method->val.other.len < size - 1 ? method->val.other.len : size - 1;
        memcpy(other, method->val.other.ptr, len);
        other[len] = '\0';
        return other;
    }
    return "?";
}

/* Returns the status requested by a /status/<code> path, or 200. */
static unsigned status_for(const char *path) {
    const char *prefix = "/status/";
    if (strncmp(path, prefix, strlen(prefix)) != 0) {
        return 200;
    }
    char *end = NULL;
    unsigned long code = strtoul(path + strlen(prefix), &end, 10);
    if (end == path + strlen(prefix) || (*end != '\0' && *end != '?' && *end != '/') ||
        code < 100 || code > 599) {
        return 200;
    }
    return (unsigned)code;
}

static void append_header(wasi_http_types_own_fields_t fields, const char *name,
                          const char *value) {
    wasi_http_types_field_name_t key;
    http_hello_string_set(&key, name);
    wasi_http_types_field_value_t val = {.ptr = (uint8_t *)value, .len = strlen(value)};
    wasi_http_types_header_error_t err;
    /* A refused header is not fatal for a hello-world answer. */
    (void)wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &key,
                                               &val, &err);
}

/* Writes all of body to the outgoing body's stream, 4096 bytes at a time (the most
 * blocking-write-and-flush accepts). Returns false if the stream failed. */
static bool write_body(wasi_http_types_own_outgoing_body_t body, const char *data, size_t len) {
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &stream)) {
        return false;
    }
    bool ok = true;
    while (len > 0 && ok) {
        size_t chunk = len < 4096 ? len : 4096;
        http_hello_list_u8_t bytes = {.ptr = (uint8_t *)data, .len = chunk};
        wasi_io_streams_stream_error_t err;
        ok = wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &bytes, &err);
        if (!ok && err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
            wasi_io_error_error_drop_own(err.val.last_operation_failed);
        }
        data += chunk;
        len -= chunk;
    }
    wasi_io_streams_output_stream_drop_own(stream);
    return ok;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);

    char path[1024] = "/";
    http_hello_string_t raw_path;
    if (wasi_http_types_method_incoming_request_path_with_query(req, &raw_path)) {
        size_t len = raw_path.len < sizeof path - 1 ? raw_path.len : sizeof path - 1;
        memcpy(path, raw_path.ptr, len);
        path[len] = '\0';
        http_hello_string_free(&raw_path);
    }
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    char other_method[32];
    const char *method_str = method_name(&method, other_method, sizeof other_method);

    unsigned status = status_for(path);
    char body[1200];
    int body_len = status == 200
                       ? snprintf(body, sizeof body, "hello from wasm\npath: %s\n", path)
                       : snprintf(body, sizeof body, "status %u\npath: %s\n", status, path);
    if (body_len < 0) {
        body_len = 0;
    } else if ((size_t)body_len >= sizeof body) {
        body_len = sizeof body - 1;
    }
    char content_length[24];
    snprintf(content_length, sizeof content_length, "%d", body_len);

    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    append_header(headers, "content-type", "text/plain; charset=utf-8");
    append_header(headers, "content-length", content_length);
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t resp =
        wasi_http_types_borrow_outgoing_response(response);
    (void)wasi_http_types_method_outgoing_response_set_status_code(resp, (uint16_t)status);
    wasi_http_types_own_outgoing_body_t out_body;
    bool have_body = wasi_http_types_method_outgoing_response_body(resp, &out_body);

    /* Hand the response (status and headers) to the host, then stream the body. */
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(response_out, &result);

    if (have_body) {
        bool written = write_body(out_body, body, (size_t)body_len);
        wasi_http_types_error_code_t err;
        if (!wasi_http_types_static_outgoing_body_finish(out_body, NULL, &err)) {
            wasi_http_types_error_code_free(&err);
            written = false;
        }
        if (!written) {
            fprintf(stderr, "http-hello: writing the body of %s failed\n", path);
        }
    }
    printf("http-hello: %s %s -> %u\n", method_str, path, status);
    fflush(stdout);
    wasi_http_types_method_free(&method);
    wasi_http_types_incoming_request_drop_own(request);
}
