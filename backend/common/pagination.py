from rest_framework.pagination import CursorPagination, PageNumberPagination


class DefaultPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class NewestFirstCursorPagination(CursorPagination):
    """Cursor pagination (`?cursor=`): stable under inserts and O(page) however deep, where page
    numbers would re-read every row before the page. The view names its `ordering`."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-position"

    def get_ordering(self, request, queryset, view):
        ordering = getattr(view, "cursor_ordering", self.ordering)
        return (ordering,) if isinstance(ordering, str) else tuple(ordering)
