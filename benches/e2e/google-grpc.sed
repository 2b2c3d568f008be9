# benches/e2e.sh ENVOY_EDIT: Envoy's ext_authz client on gRPC's own C++ library (google_grpc)
# instead of Envoy's HTTP/2 stack (envoy_grpc). @TOLLGATE_PORT@ is tollgate's port.
s/envoy_grpc: { cluster_name: tollgate, skip_envoy_headers: true }/google_grpc: { target_uri: "127.0.0.1:@TOLLGATE_PORT@", stat_prefix: tollgate }/
