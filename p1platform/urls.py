from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from p1platform import health
from telemetry.views import IngestViewSet

router = SimpleRouter(trailing_slash=False)
router.register("ingest", IngestViewSet, basename="ingest")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]
