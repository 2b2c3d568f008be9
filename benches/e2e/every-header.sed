# benches/e2e.sh ENVOY_EDIT: send tollgate every request header, as the shipped file did before
# its allowed_headers (the A/B of that list, issue 18).
/^                      allowed_headers:/,/^                          - { exact: x-plan }/d
