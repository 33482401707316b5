// Calls the FastAPI app with the AuthKit access token as a bearer token.
const API_URL = import.meta.env.VITE_API_URL ?? "http://localhost:8000";

export function createApi(authkit) {
  async function call(path, init = {}) {
    // getAccessToken() refreshes the short-lived token when it is about to expire.
    const token = await authkit.getAccessToken();
    const response = await fetch(`${API_URL}${path}`, {
      ...init,
      headers: {
        ...init.headers,
        Authorization: `Bearer ${token}`,
        "Content-Type": "application/json",
      },
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(`${init.method ?? "GET"} ${path}: ${response.status} ${body.detail ?? ""}`);
    }
    return response.json();
  }

  return {
    me: () => call("/me"),
    todoLists: () => call("/todo-lists"),
    createTodoList: (name) =>
      call("/todo-lists", { method: "POST", body: JSON.stringify({ name }) }),
  };
}
