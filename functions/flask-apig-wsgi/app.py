"""A Flask app behind apig-wsgi, written as for AWS Lambda: `handler = make_lambda_handler(app)`."""

from apig_wsgi import make_lambda_handler
from flask import Flask, make_response, redirect, request, url_for

app = Flask(__name__)

FORM = """<!doctype html>
<form method="post" action="/signup">
  <input name="name"> <input name="email"> <button>Sign up</button>
</form>
"""


@app.get("/")
def index():
    return FORM


@app.post("/signup")
def signup():
    name = request.form.get("name", "").strip()
    email = request.form.get("email", "").strip()
    if not name or "@" not in email:
        return {"error": "name and a valid email are required"}, 400
    # A fixed redirect target (never one taken from the request) and cookies that only
    # remember a name: a client can send any `user`, so they authenticate nobody.
    response = redirect(url_for("welcome"), code=303)
    response.set_cookie("user", name, httponly=True, samesite="Lax")
    response.set_cookie("email", email)
    return response


@app.get("/welcome")
def welcome():
    user = request.cookies.get("user")
    if user is None:
        return redirect(url_for("index"))
    return {"welcome": user, "email": request.cookies.get("email")}


@app.post("/logout")
def logout():
    response = make_response(redirect(url_for("index"), code=303))
    response.delete_cookie("user")
    response.delete_cookie("email")
    return response


handler = make_lambda_handler(app)
