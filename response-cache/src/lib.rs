//! response-cache: Envoy's external processing service caching GET/HEAD responses.
