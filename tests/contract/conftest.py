from tests.support.redis_cluster import redis_cluster, redis_cluster_with_replicas  # noqa: F401
