import { createClient } from "@workos-inc/authkit-js";
import { createApi } from "./api.js";

const clientId = import.meta.env.VITE_WORKOS_CLIENT_ID;
const redirectUri = import.meta.env.VITE_WORKOS_REDIRECT_URI ?? window.location.origin;
const $ = (id) => document.getElementById(id);

function showError(error) {
  $("error").textContent = error instanceof Error ? error.message : String(error);
}

async function renderLists(api) {
  const lists = await api.todoLists();
  $("lists").replaceChildren(
    ...lists.map((list) => {
      const item = document.createElement("li");
      item.textContent = list.name;
      return item;
    }),
  );
}

async function start() {
  if (!clientId) {
    $("status").textContent = "Set VITE_WORKOS_CLIENT_ID in .env.local (see README.md).";
    return;
  }
  const authkit = await createClient(clientId, { redirectUri });
  const user = authkit.getUser();
  $("status").textContent = "";
  if (!user) {
    $("signed-out").hidden = false;
    $("sign-in").onclick = () => authkit.signIn();
    $("sign-up").onclick = () => authkit.signUp();
    return;
  }

  const api = createApi(authkit);
  $("signed-in").hidden = false;
  $("sign-out").onclick = () => authkit.signOut();
  // /me answers with the user as synced from WorkOS webhooks (or fetched just in time).
  const me = await api.me();
  $("email").textContent = me.email;
  await renderLists(api);
  $("new-list").onsubmit = async (event) => {
    event.preventDefault();
    const input = $("list-name");
    try {
      await api.createTodoList(input.value);
      input.value = "";
      await renderLists(api);
    } catch (error) {
      showError(error);
    }
  };
}

start().catch(showError);
