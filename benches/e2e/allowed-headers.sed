# benches/e2e.sh ENVOY_EDIT: send tollgate only the headers it reads (the A/B of allowed_headers).
/failure_mode_allow_header_add: true/a\
                      allowed_headers:\
                        patterns: [{ exact: x-api-key }, { exact: access-control-request-method }, { exact: traceparent }]
