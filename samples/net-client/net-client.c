/*
 * net-client: a WASI 0.2 command component (wasi:cli/run) that calls a Service by name from
 * inside a wasm pod, twice:
 *
 *   1. over wasi:http's outgoing handler: GET http://HOST:PORT/PATH (the node resolves HOST
 *      through the cluster DNS, as the pod's resolv.conf says);
 *   2. over a raw wasi:sockets TCP connection: HOST resolved with wasi:sockets/ip-name-lookup,
 *      a connection to its first address, "GET PATH HTTP/1.0" written by hand, the answer
 *      read until the server closes.
 *
 *   net-client [HOST [PORT [PATH]]]
 *   net-client --serve PORT
 *
 * HOST, PORT and PATH default to $TARGET_HOST, $TARGET_PORT (else 80) and $TARGET_PATH (else
 * /). Prints, for each way, "net-client: http GET <url> -> <status>" or "net-client: tcp GET
 * <url> -> <status line>", then "net-client: <way> body <first bytes>", or one line saying
 * what failed (a name that does not resolve: "cannot resolve HOST: ..."). Exits 0 when both
 * answered, 1 otherwise.
 *
 * With --serve it is the other end: a wasi:sockets listener on 0.0.0.0:PORT (at the pod IP),
 * printing "net-client: listening on ADDR", answering the first connection with
 * "hello from net-client" and exiting 0.
 *
 * Built like api-client: bindings generated from wit/ (world net-client) by
 * `wasmkube-componentize bindgen`, a reactor core module exporting wasi:cli/run, the reactor
 * adapter; see samples/build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#include "net_client.h"

#define BODY_SHOWN 2048

/* wasi:sockets/network's error-code, in the WIT's order. */
static const char *socket_error_name(unsigned code) {
    static const char *names[] = {
        "unknown",           "access-denied",        "not-supported",
        "invalid-argument",  "out-of-memory",        "timeout",
        "concurrency-conflict", "not-in-progress",   "would-block",
        "invalid-state",     "new-socket-limit",     "address-not-bindable",
        "address-in-use",    "remote-unreachable",   "connection-refused",
        "connection-reset",  "connection-aborted",   "datagram-too-large",
        "name-unresolvable", "temporary-resolver-failure", "permanent-resolver-failure",
    };
    return code < sizeof names / sizeof names[0] ? names[code] : "unknown";
}

/* A line saying why a wasi:http request failed. */
static void describe_http_error(const wasi_http_types_error_code_t *error, char *out, size_t size) {
    switch (error->tag) {
    case WASI_HTTP_TYPES_ERROR_CODE_DNS_ERROR: {
        const wasi_http_types_dns_error_payload_t *dns = &error->val.dns_error;
        if (dns->rcode.is_some) {
            snprintf(out, size, "DNS error %.*s", (int)dns->rcode.val.len,
                     (const char *)dns->rcode.val.ptr);
        } else {
            snprintf(out, size, "DNS error");
        }
        break;
    }
    case WASI_HTTP_TYPES_ERROR_CODE_DNS_TIMEOUT:
        snprintf(out, size, "DNS timeout");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED:
        snprintf(out, size, "destination IP prohibited");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_REFUSED:
        snprintf(out, size, "connection refused");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TIMEOUT:
        snprintf(out, size, "connection timeout");
        break;
    default:
        snprintf(out, size, "error code %u", error->tag);
    }
}

/* GET http://authority/path over wasi:http; true on any HTTP answer. */
static bool http_get(const char *authority, const char *path) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(headers);
    wasi_http_types_borrow_outgoing_request_t req =
        wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    net_client_string_t authority_str, path_str;
    net_client_string_set(&authority_str, authority);
    net_client_string_set(&path_str, path);
    if (!wasi_http_types_method_outgoing_request_set_method(req, &method) ||
        !wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(req, &authority_str) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path_str)) {
        printf("net-client: http GET http://%s%s refused (a bad name or path)\n", authority, path);
        return false;
    }
    wasi_http_types_own_outgoing_body_t body;
    bool have_body = wasi_http_types_method_outgoing_request_body(req, &body);

    char why[256];
    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    wasi_http_outgoing_handler_error_code_t error;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &error)) {
        describe_http_error(&error, why, sizeof why);
        printf("net-client: http GET http://%s%s failed: %s\n", authority, path, why);
        wasi_http_types_error_code_free(&error);
        return false;
    }
    if (have_body) {
        wasi_http_types_error_code_t finish_error;
        if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error)) {
            wasi_http_types_error_code_free(&finish_error);
        }
    }
    wasi_http_types_borrow_future_incoming_response_t fut =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_own_pollable_t ready =
        wasi_http_types_method_future_incoming_response_subscribe(fut);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t outcome;
    if (!wasi_http_types_method_future_incoming_response_get(fut, &outcome) || outcome.is_err) {
        printf("net-client: http GET http://%s%s failed: no response\n", authority, path);
        wasi_http_types_future_incoming_response_drop_own(future);
        return false;
    }
    if (outcome.val.ok.is_err) {
        describe_http_error(&outcome.val.ok.val.err, why, sizeof why);
        printf("net-client: http GET http://%s%s failed: %s\n", authority, path, why);
        wasi_http_types_error_code_free(&outcome.val.ok.val.err);
        wasi_http_types_future_incoming_response_drop_own(future);
        return false;
    }
    wasi_http_types_own_incoming_response_t response = outcome.val.ok.val.ok;
    wasi_http_types_future_incoming_response_drop_own(future);
    wasi_http_types_borrow_incoming_response_t resp =
        wasi_http_types_borrow_incoming_response(response);
    unsigned status = wasi_http_types_method_incoming_response_status(resp);

    static char shown[BODY_SHOWN + 1];
    size_t shown_len = 0;
    wasi_http_types_own_incoming_body_t incoming;
    if (wasi_http_types_method_incoming_response_consume(resp, &incoming)) {
        wasi_http_types_own_input_stream_t stream;
        if (wasi_http_types_method_incoming_body_stream(
                wasi_http_types_borrow_incoming_body(incoming), &stream)) {
            for (;;) {
                net_client_list_u8_t chunk;
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
                net_client_list_u8_free(&chunk);
            }
            wasi_io_streams_input_stream_drop_own(stream);
        }
        wasi_http_types_incoming_body_drop_own(incoming);
    }
    wasi_http_types_incoming_response_drop_own(response);
    shown[shown_len] = '\0';
    while (shown_len > 0 && (shown[shown_len - 1] == '\n' || shown[shown_len - 1] == '\r')) {
        shown[--shown_len] = '\0';
    }
    printf("net-client: http GET http://%s%s -> %u\n", authority, path, status);
    printf("net-client: http body %s\n", shown);
    return true;
}

/* The first IPv4 address of host (ip-name-lookup); false (and a line saying why) if none. */
static bool resolve(wasi_sockets_instance_network_own_network_t network, const char *host,
                    wasi_sockets_network_ipv4_address_t *out) {
    net_client_string_t name;
    net_client_string_set(&name, host);
    wasi_sockets_ip_name_lookup_own_resolve_address_stream_t stream;
    wasi_sockets_ip_name_lookup_error_code_t err;
    if (!wasi_sockets_ip_name_lookup_resolve_addresses(
            wasi_sockets_network_borrow_network(network), &name, &stream, &err)) {
        printf("net-client: cannot resolve %s: %s\n", host, socket_error_name(err));
        return false;
    }
    wasi_sockets_ip_name_lookup_borrow_resolve_address_stream_t s =
        wasi_sockets_ip_name_lookup_borrow_resolve_address_stream(stream);
    bool found = false;
    for (;;) {
        wasi_sockets_ip_name_lookup_option_ip_address_t next;
        if (!wasi_sockets_ip_name_lookup_method_resolve_address_stream_resolve_next_address(
                s, &next, &err)) {
            if (err == WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
                wasi_sockets_ip_name_lookup_own_pollable_t ready =
                    wasi_sockets_ip_name_lookup_method_resolve_address_stream_subscribe(s);
                wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
                wasi_io_poll_pollable_drop_own(ready);
                continue;
            }
            printf("net-client: cannot resolve %s: %s\n", host, socket_error_name(err));
            break;
        }
        if (!next.is_some) {
            printf("net-client: cannot resolve %s: no IPv4 address\n", host);
            break;
        }
        if (next.val.tag == WASI_SOCKETS_NETWORK_IP_ADDRESS_IPV4) {
            *out = next.val.val.ipv4;
            found = true;
            break;
        }
    }
    wasi_sockets_ip_name_lookup_resolve_address_stream_drop_own(stream);
    return found;
}

/* Waits on a socket's pollable. */
static void wait_socket(wasi_sockets_tcp_borrow_tcp_socket_t socket) {
    wasi_sockets_tcp_own_pollable_t ready = wasi_sockets_tcp_method_tcp_socket_subscribe(socket);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
}

/* GET path from host:port over a TCP connection of our own; true on any answer. */
static bool tcp_get(const char *host, unsigned port, const char *path) {
    wasi_sockets_instance_network_own_network_t network =
        wasi_sockets_instance_network_instance_network();
    wasi_sockets_network_ipv4_address_t ip;
    bool ok = false;
    if (!resolve(network, host, &ip)) {
        wasi_sockets_network_network_drop_own(network);
        return false;
    }
    char addr_text[32];
    snprintf(addr_text, sizeof addr_text, "%u.%u.%u.%u:%u", ip.f0, ip.f1, ip.f2, ip.f3, port);

    wasi_sockets_tcp_create_socket_own_tcp_socket_t socket;
    wasi_sockets_tcp_create_socket_error_code_t err;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4,
                                                         &socket, &err)) {
        printf("net-client: tcp socket: %s\n", socket_error_name(err));
        wasi_sockets_network_network_drop_own(network);
        return false;
    }
    wasi_sockets_tcp_borrow_tcp_socket_t sock = wasi_sockets_tcp_borrow_tcp_socket(socket);
    wasi_sockets_network_ip_socket_address_t remote = {
        .tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4,
        .val.ipv4 = {.port = (uint16_t)port, .address = ip},
    };
    wasi_sockets_tcp_tuple2_own_input_stream_own_output_stream_t streams;
    if (!wasi_sockets_tcp_method_tcp_socket_start_connect(
            sock, wasi_sockets_network_borrow_network(network), &remote, &err)) {
        printf("net-client: tcp connect to %s (%s): %s\n", host, addr_text, socket_error_name(err));
        goto out;
    }
    for (;;) {
        if (wasi_sockets_tcp_method_tcp_socket_finish_connect(sock, &streams, &err)) {
            break;
        }
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            printf("net-client: tcp connect to %s (%s): %s\n", host, addr_text,
                   socket_error_name(err));
            goto out;
        }
        wait_socket(sock);
    }

    char request[1024];
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: net-client\r\n"
                       "Connection: close\r\n\r\n",
                       path, host);
    net_client_list_u8_t bytes = {.ptr = (uint8_t *)request, .len = (size_t)len};
    wasi_io_streams_stream_error_t write_err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(streams.f1), &bytes, &write_err)) {
        printf("net-client: tcp write to %s failed\n", addr_text);
        if (write_err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
            wasi_io_error_error_drop_own(write_err.val.last_operation_failed);
        }
    } else {
        static char answer[BODY_SHOWN + 1];
        size_t answer_len = 0;
        for (;;) {
            net_client_list_u8_t chunk;
            wasi_io_streams_stream_error_t read_err;
            if (!wasi_io_streams_method_input_stream_blocking_read(
                    wasi_io_streams_borrow_input_stream(streams.f0), 65536, &chunk, &read_err)) {
                if (read_err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
                    wasi_io_error_error_drop_own(read_err.val.last_operation_failed);
                }
                break;
            }
            size_t take =
                chunk.len < BODY_SHOWN - answer_len ? chunk.len : BODY_SHOWN - answer_len;
            memcpy(answer + answer_len, chunk.ptr, take);
            answer_len += take;
            net_client_list_u8_free(&chunk);
        }
        answer[answer_len] = '\0';
        char *line_end = strstr(answer, "\r\n");
        char *body = strstr(answer, "\r\n\r\n");
        if (line_end == NULL) {
            printf("net-client: tcp GET %s from %s: no HTTP answer (%zu bytes)\n", path, addr_text,
                   answer_len);
        } else {
            *line_end = '\0';
            printf("net-client: tcp GET http://%s:%u%s (%s) -> %s\n", host, port, path, addr_text,
                   answer);
            if (body != NULL) {
                body += 4;
                size_t body_len = strlen(body);
                while (body_len > 0 && (body[body_len - 1] == '\n' || body[body_len - 1] == '\r')) {
                    body[--body_len] = '\0';
                }
                printf("net-client: tcp body %s\n", body);
            }
            ok = true;
        }
    }
    wasi_io_streams_input_stream_drop_own(streams.f0);
    wasi_io_streams_output_stream_drop_own(streams.f1);
out:
    wasi_sockets_tcp_tcp_socket_drop_own(socket);
    wasi_sockets_network_network_drop_own(network);
    return ok;
}

/* "A.B.C.D:P" of an IPv4 socket address. */
static void format_address(const wasi_sockets_network_ip_socket_address_t *addr, char *out,
                           size_t size) {
    if (addr->tag != WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4) {
        snprintf(out, size, "(IPv6)");
        return;
    }
    const wasi_sockets_network_ipv4_socket_address_t *v4 = &addr->val.ipv4;
    snprintf(out, size, "%u.%u.%u.%u:%u", v4->address.f0, v4->address.f1, v4->address.f2,
             v4->address.f3, v4->port);
}

/* --serve PORT: listens on 0.0.0.0:PORT (the node puts it at the pod IP), answers the first
 * connection it is given with one line and exits 0. */
static int serve(unsigned port) {
    wasi_sockets_instance_network_own_network_t network =
        wasi_sockets_instance_network_instance_network();
    wasi_sockets_tcp_create_socket_own_tcp_socket_t socket;
    wasi_sockets_tcp_error_code_t err;
    int status = 1;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4,
                                                         &socket, &err)) {
        printf("net-client: tcp socket: %s\n", socket_error_name(err));
        wasi_sockets_network_network_drop_own(network);
        return 1;
    }
    wasi_sockets_tcp_borrow_tcp_socket_t sock = wasi_sockets_tcp_borrow_tcp_socket(socket);
    wasi_sockets_network_ip_socket_address_t any = {
        .tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4,
        .val.ipv4 = {.port = (uint16_t)port, .address = {0, 0, 0, 0}},
    };
    char text[64];
    if (!wasi_sockets_tcp_method_tcp_socket_start_bind(
            sock, wasi_sockets_network_borrow_network(network), &any, &err) ||
        !wasi_sockets_tcp_method_tcp_socket_finish_bind(sock, &err)) {
        printf("net-client: bind to 0.0.0.0:%u: %s\n", port, socket_error_name(err));
        goto out;
    }
    if (!wasi_sockets_tcp_method_tcp_socket_start_listen(sock, &err)) {
        printf("net-client: listen: %s\n", socket_error_name(err));
        goto out;
    }
    while (!wasi_sockets_tcp_method_tcp_socket_finish_listen(sock, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            printf("net-client: listen: %s\n", socket_error_name(err));
            goto out;
        }
        wait_socket(sock);
    }
    wasi_sockets_network_ip_socket_address_t local;
    if (wasi_sockets_tcp_method_tcp_socket_local_address(sock, &local, &err)) {
        format_address(&local, text, sizeof text);
        printf("net-client: listening on %s\n", text);
        fflush(stdout);
    }
    wasi_sockets_tcp_tuple3_own_tcp_socket_own_input_stream_own_output_stream_t accepted;
    while (!wasi_sockets_tcp_method_tcp_socket_accept(sock, &accepted, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) {
            printf("net-client: accept: %s\n", socket_error_name(err));
            goto out;
        }
        wait_socket(sock);
    }
    wasi_sockets_network_ip_socket_address_t peer;
    if (wasi_sockets_tcp_method_tcp_socket_remote_address(
            wasi_sockets_tcp_borrow_tcp_socket(accepted.f0), &peer, &err)) {
        format_address(&peer, text, sizeof text);
        printf("net-client: accepted a connection from %s\n", text);
    }
    static const char line[] = "hello from net-client\n";
    net_client_list_u8_t bytes = {.ptr = (uint8_t *)line, .len = sizeof line - 1};
    wasi_io_streams_stream_error_t write_err;
    if (wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(accepted.f2), &bytes, &write_err)) {
        status = 0;
    } else if (write_err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
        wasi_io_error_error_drop_own(write_err.val.last_operation_failed);
    }
    wasi_io_streams_input_stream_drop_own(accepted.f1);
    wasi_io_streams_output_stream_drop_own(accepted.f2);
    wasi_sockets_tcp_tcp_socket_drop_own(accepted.f0);
out:
    wasi_sockets_tcp_tcp_socket_drop_own(socket);
    wasi_sockets_network_network_drop_own(network);
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

static const char *arg_or_env(int argc, char **argv, int i, const char *env, const char *dflt) {
    if (argc > i && argv[i][0] != '\0') {
        return argv[i];
    }
    const char *value = getenv(env);
    return value != NULL && value[0] != '\0' ? value : dflt;
}

static int run(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--serve") == 0) {
        long port = strtol(argv[2], NULL, 10);
        if (port < 1 || port > 65535) {
            fprintf(stderr, "net-client: the port %s is not a number from 1 to 65535\n", argv[2]);
            return 1;
        }
        return serve((unsigned)port);
    }
    const char *host = arg_or_env(argc, argv, 1, "TARGET_HOST", NULL);
    const char *port_text = arg_or_env(argc, argv, 2, "TARGET_PORT", "80");
    const char *path = arg_or_env(argc, argv, 3, "TARGET_PATH", "/");
    if (host == NULL) {
        fprintf(stderr, "net-client: no target: give HOST as the first argument or $TARGET_HOST\n");
        return 1;
    }
    char *end = NULL;
    long port = strtol(port_text, &end, 10);
    if (end == port_text || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "net-client: the port %s is not a number from 1 to 65535\n", port_text);
        return 1;
    }
    char authority[300];
    if (port == 80) {
        snprintf(authority, sizeof authority, "%s", host);
    } else {
        snprintf(authority, sizeof authority, "%s:%ld", host, port);
    }
    bool http_ok = http_get(authority, path);
    fflush(stdout);
    bool tcp_ok = tcp_get(host, (unsigned)port, path);
    fflush(stdout);
    return http_ok && tcp_ok ? 0 : 1;
}

bool exports_wasi_cli_run_run(void) {
    char *argv[4] = {NULL, NULL, NULL, NULL};
    int argc = (int)arguments(argv, 4);
    return run(argc, argv) == 0;
}
