"""Benchmark-only URLs: everything of the project, plus a bare DRF view.

The bare view is the realtime benchmark's baseline: DRF, no authentication, one Redis
GET of a key the benchmark fills with a realtime answer. It lives here, not in the
product.
"""

from django.core.cache import cache
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

BENCH_KEY = "bench:one-key"


class OneRedisKey(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response(cache.get(BENCH_KEY))


urlpatterns = [
    path("bench/redis-key", OneRedisKey.as_view()),
    path("", include("p1platform.urls")),
]
