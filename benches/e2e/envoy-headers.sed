# benches/e2e.sh ENVOY_EDIT: the ext_authz client with the x-envoy-internal and x-forwarded-for
# headers Envoy adds to every call by default (the shipped file skips them: skip_envoy_headers).
s/envoy_grpc: { cluster_name: tollgate, skip_envoy_headers: true }/envoy_grpc: { cluster_name: tollgate }/
