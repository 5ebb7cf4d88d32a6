from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from capacity.views import CapacityViewSet, MeterHistoryViewSet, RealtimeViewSet
from dashboard import views as dashboard_views
from dashboard.csp import with_csp
from integrations.metrics import metrics_view
from integrations.views import ExportViewSet
from p1platform import health
from p1platform.api_docs import DocsView
from telemetry.read_views import DeviceViewSet, SeriesViewSet
from telemetry.views import IngestViewSet

router = SimpleRouter(trailing_slash=False)
router.register("ingest", IngestViewSet, basename="ingest")
router.register("meter-history", MeterHistoryViewSet, basename="meter-history")
router.register("devices", DeviceViewSet, basename="devices")
router.register("realtime", RealtimeViewSet, basename="realtime")
router.register("series", SeriesViewSet, basename="series")
router.register("capacity", CapacityViewSet, basename="capacity")
router.register("export", ExportViewSet, basename="export")

urlpatterns = [
    # Before the router's routes: public, no token needed (docs/adr/0004).
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs", with_csp(DocsView.as_view(url_name="schema")), name="docs"),
    path("v1/", include(router.urls)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", dashboard_views.dashboard, name="dashboard"),
    path("login", dashboard_views.login, name="login"),
    path("logout", dashboard_views.logout, name="logout"),
    # Browsers ask for /favicon.ico on pages without an icon link (admin, API docs): the
    # dashboard's icon instead of a logged 404 per page view.
    path("favicon.ico", dashboard_views.favicon, name="favicon"),
]
