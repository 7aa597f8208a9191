/*
 * api-client: a WASI 0.2 command component (wasi:cli/run) that calls the Kubernetes API from
 * inside a pod, the way an in-cluster client does: the service-account
 * token and namespace from /var/run/secrets/kubernetes.io/serviceaccount, the apiserver from
 * KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, HTTPS through wasi:http's outgoing
 * handler (the host verifies the apiserver against the cluster CA).
 *
 *   api-client [PATH [INTERVAL_MS]]
 *
 * GETs PATH (default /api/v1/namespaces/<namespace>/pods) with "Authorization: Bearer
 * <token>" and prints "api-client: GET <path> -> <status>" and the first bytes of the body.
 * With INTERVAL_MS > 0 it asks again every INTERVAL_MS, reading the token file afresh each
 * time (the node renews it), until stopped; otherwise it exits 0 on 200 and 1 otherwise.
 *
 * The wasi:http bindings (api_client.h/.c) are generated from wit/ at build time by
 * `wasmkube-componentize bindgen`; see samples/build. It is built as a reactor exporting
 * wasi:cli/run itself (with the reactor adapter): the bindings' exported cabi_realloc must not
 * run wasi-libc's constructors, which a command module's exports do.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>

#include "api_client.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define BODY_SHOWN 16384

/* Reads a whole (small) file into buf, without a trailing newline; false if unreadable. */
static bool read_file(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }
    buf[n] = '\0';
    return n > 0;
}

static void append_header(wasi_http_types_own_fields_t fields, const char *name,
                          const char *value) {
    wasi_http_types_field_name_t key;
    api_client_string_set(&key, name);
    wasi_http_types_field_value_t val = {.ptr = (uint8_t *)value, .len = strlen(value)};
    wasi_http_types_header_error_t err;
    if (!wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &key, &val,
                                              &err)) {
        fprintf(stderr, "api-client: the header %s was refused\n", name);
    }
}

/* Sends one GET; prints the outcome. Returns the HTTP status, or 0 if there was none. */
static unsigned get(const char *authority, const char *path, const char *token) {
    char bearer[8192];
    snprintf(bearer, sizeof bearer, "Bearer %s", token);
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    append_header(headers, "authorization", bearer);
    append_header(headers, "accept", "application/json");
    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(headers);
    wasi_http_types_borrow_outgoing_request_t req =
        wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTPS};
    api_client_string_t authority_str, path_str;
    api_client_string_set(&authority_str, authority);
    api_client_string_set(&path_str, path);
    if (!wasi_http_types_method_outgoing_request_set_method(req, &method) ||
        !wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(req, &authority_str) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path_str)) {
        fprintf(stderr, "api-client: the request to https://%s%s was refused\n", authority, path);
        return 0;
    }
    wasi_http_types_own_outgoing_body_t body;
    bool have_body = wasi_http_types_method_outgoing_request_body(req, &body);

    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    wasi_http_outgoing_handler_error_code_t error;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &error)) {
        fprintf(stderr, "api-client: GET %s failed to start (error code %u)\n", path, error.tag);
        wasi_http_types_error_code_free(&error);
        return 0;
    }
    if (have_body) {
        wasi_http_types_error_code_t finish_error;
        if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error)) {
            wasi_http_types_error_code_free(&finish_error);
        }
    }

    wasi_http_types_borrow_future_incoming_response_t fut =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(fut);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t outcome;
    if (!wasi_http_types_method_future_incoming_response_get(fut, &outcome) || outcome.is_err ||
        outcome.val.ok.is_err) {
        unsigned code = (!outcome.is_err && outcome.val.ok.is_err) ? outcome.val.ok.val.err.tag : 0;
        printf("api-client: GET %s failed (error code %u)\n", path, code);
        fflush(stdout);
        wasi_http_types_future_incoming_response_drop_own(future);
        return 0;
    }
    wasi_http_types_own_incoming_response_t response = outcome.val.ok.val.ok;
    wasi_http_types_future_incoming_response_drop_own(future);
    wasi_http_types_borrow_incoming_response_t resp =
        wasi_http_types_borrow_incoming_response(response);
    unsigned status = wasi_http_types_method_incoming_response_status(resp);

    /* The body, up to BODY_SHOWN bytes of it shown. */
    static char shown[BODY_SHOWN + 1];
    size_t shown_len = 0;
    wasi_http_types_own_incoming_body_t incoming;
    if (wasi_http_types_method_incoming_response_consume(resp, &incoming)) {
        wasi_http_types_own_input_stream_t stream;
        if (wasi_http_types_method_incoming_body_stream(
                wasi_http_types_borrow_incoming_body(incoming), &stream)) {
            for (;;) {
                api_client_list_u8_t chunk;
                wasi_io_streams_stream_error_t err;
                if (!wasi_io_streams_method_input_stream_blocking_read(
                        wasi_io_streams_borrow_input_stream(stream), 65536, &chunk, &err)) {
                    if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
                        wasi_io_error_error_drop_own(err.val.last_operation_failed);
                    }
                    break;
                }
                size_t take = chunk.len < BODY_SHOWN - shown_len ? chunk.len : BODY_SHOWN - shown_len;
                memcpy(shown + shown_len, chunk.ptr, take);
                shown_len += take;
                api_client_list_u8_free(&chunk);
            }
            wasi_io_streams_input_stream_drop_own(stream);
        }
        wasi_http_types_incoming_body_drop_own(incoming);
    }
    wasi_http_types_incoming_response_drop_own(response);
    shown[shown_len] = '\0';
    printf("api-client: GET %s -> %u\n", path, status);
    printf("api-client: body %s\n", shown);
    fflush(stdout);
    return status;
}

/* The program's arguments (argv[0] first), from WASI; at most `max`. */
static size_t arguments(char **argv, size_t max) {
    __wasi_size_t count = 0, size = 0;
    if (__wasi_args_sizes_get(&count, &size) != 0 || count == 0) {
        return 0;
    }
    char **all = calloc(count, sizeof *all);
    char *buf = malloc(size);
    if (all == NULL || buf == NULL || __wasi_args_get((uint8_t **)all, (uint8_t *)buf) != 0) {
        return 0;
    }
    size_t n = count < max ? count : max;
    for (size_t i = 0; i < n; i++) {
        argv[i] = all[i];
    }
    return n;
}

static int run(int argc, char **argv) {
    char namespace[256] = "default";
    read_file(SA_DIR "/namespace", namespace, sizeof namespace);
    char path[1024];
    if (argc > 1 && argv[1][0] != '\0') {
        snprintf(path, sizeof path, "%s", argv[1]);
    } else {
        snprintf(path, sizeof path, "/api/v1/namespaces/%s/pods", namespace);
    }
    long interval_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || port == NULL) {
        fprintf(stderr, "api-client: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set\n");
        return 1;
    }
    char authority[300];
    snprintf(authority, sizeof authority, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    for (;;) {
        static char token[8192];
        unsigned status = 0;
        if (read_file(SA_DIR "/token", token, sizeof token)) {
            status = get(authority, path, token);
        } else {
            printf("api-client: no token at " SA_DIR "/token\n");
            fflush(stdout);
        }
        if (interval_ms <= 0) {
            return status == 200 ? 0 : 1;
        }
        struct timespec pause = {.tv_sec = interval_ms / 1000,
                                 .tv_nsec = (interval_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
}

bool exports_wasi_cli_run_run(void) {
    char *argv[3] = {NULL, NULL, NULL};
    int argc = (int)arguments(argv, 3);
    return run(argc, argv) == 0;
}
