"""The one exception the simulator raises to answer a request with an API error."""

from __future__ import annotations

__all__ = ["AZURE_CODES", "ApiError"]

#: Azure's ``error.code`` for each HTTP status (AZ-SPEC ``ErrorCode``)
AZURE_CODES = {
    400: "invalidPayload",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
    429: "tooManyRequests",
    500: "internalFailure",
    502: "serviceUnavailable",
    503: "serviceUnavailable",
}


class ApiError(Exception):
    """An error response. The server renders it as OpenAI's or Azure's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        azure_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        fallback = "invalidPayload" if status < 500 else "internalFailure"
        self.azure_code = azure_code or AZURE_CODES.get(status, fallback)
        self.headers = dict(headers or {})

    def body(self, api: str) -> dict[str, object]:
        """The JSON error body in ``api``'s shape."""
        if api == "azure":
            error: dict[str, object] = {"code": self.azure_code, "message": self.message}
            if self.param:
                error["target"] = self.param
            return {"error": error}
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
