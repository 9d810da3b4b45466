"""The management web UI in a real browser: Debian's chromium driven by Selenium (chromium-driver). Logs in,
finds a queue declared over AMQP, publishes and gets a message through the UI, purges the queue, closes a
connection, and keeps a screenshot of each step in test-artifacts/ui/."""

import os
import shutil
import uuid

import pika
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(ROOT, "test-artifacts", "ui")

# Warren's own UI (RabbitMQ's is another program). CI installs Debian's chromium and chromium-driver; elsewhere these
# tests skip without them.
HAVE_BROWSER = shutil.which("chromium") is not None and shutil.which("chromedriver") is not None
pytestmark = [
    pytest.mark.warren_only,
    pytest.mark.skipif(not HAVE_BROWSER and not os.environ.get("CI"), reason="chromium/chromium-driver not installed"),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver (Debian) must be installed"
    options = Options()
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"]:
        options.add_argument(argument)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield driver
    # The one refused request a test makes on purpose (a wrong password) is not an error of the UI's.
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and not ("/api/whoami" in entry["message"] and "401" in entry["message"])]
    driver.quit()
    assert errors == [], errors  # no script errors, no failed requests


def shot(driver, name):
    driver.save_screenshot(os.path.join(ARTIFACTS, f"{name}.png"))


def click(wait, locator):
    """Clicks what `locator` finds once it can be clicked; a list the UI refreshed meanwhile is found again."""
    from selenium.common.exceptions import (ElementClickInterceptedException, NoSuchElementException,
                                            StaleElementReferenceException)

    def attempt(driver):
        try:
            driver.find_element(*locator).click()
            return True
        except (StaleElementReferenceException, ElementClickInterceptedException, NoSuchElementException):
            return False

    wait.until(attempt)


def test_ui_end_to_end(broker, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    # The UI re-renders a list when a load finishes (the first, unfiltered one may finish after the filter is typed):
    # an element found in one render may be gone in the next, and is looked up again.
    wait = WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException])
    base = f"http://127.0.0.1:{broker.management_port}"
    queue = f"ui-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)

        # A wrong password is refused on the login form.
        browser.get(base + "/")
        wait.until(EC.visibility_of_element_located((By.ID, "login-user"))).send_keys("guest")
        browser.find_element(By.ID, "login-password").send_keys("wrong")
        browser.find_element(By.ID, "login-submit").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "login-error"), "Login failed"))
        shot(browser, "01-login-refused")
        password = browser.find_element(By.ID, "login-password")
        password.clear()
        password.send_keys("guest")
        browser.find_element(By.ID, "login-submit").click()
        wait.until(EC.visibility_of_element_located((By.ID, "total-queues")))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#total-connections .value").text == "1")
        shot(browser, "02-overview")

        # The queue declared over AMQP, found with the filter.
        browser.get(base + "/#/queues")
        box = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "[data-list=queues] .filter")))
        box.send_keys(queue)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
        wait.until(EC.element_to_be_clickable((By.LINK_TEXT, queue)))
        shot(browser, "03-queues")
        click(wait, (By.LINK_TEXT, queue))
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-name"), queue))

        # Publish through the UI, then get it back.
        form = browser.find_element(By.ID, "queue-publish")
        form.find_element(By.NAME, "payload").send_keys("hello from the browser")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Message published."))
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-ready"), "1"))
        browser.find_element(By.ID, "get-button").click()
        payload = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#got .payload")))
        assert payload.text == "hello from the browser"
        shot(browser, "04-get-message")
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        assert body == b"hello from the browser" and method.redelivered  # requeued by the UI's get
        channel.basic_nack(method.delivery_tag, requeue=True)

        # Purge (confirmed in the dialog).
        browser.find_element(By.ID, "purge").click()
        browser.switch_to.alert.accept()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Queue purged."))
        wait.until(EC.text_to_be_present_in_element((By.ID, "queue-ready"), "0"))
        assert channel.queue_declare(queue, passive=True).method.message_count == 0
        shot(browser, "05-purged")

        # Close the AMQP connection from its page.
        browser.get(base + "/#/connections")
        click(wait, (By.CSS_SELECTOR, "a.connection-link"))
        wait.until(EC.visibility_of_element_located((By.ID, "close-connection")))
        shot(browser, "06-connection")
        reason = browser.find_element(By.CSS_SELECTOR, "#close-connection input[name=reason]")
        reason.clear()
        reason.send_keys("closed from the UI test")
        browser.find_element(By.CSS_SELECTOR, "#close-connection button").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Connection closed."))
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            connection.process_data_events(time_limit=10)
            connection.process_data_events(time_limit=10)
        assert closed.value.reply_code == 320 and "closed from the UI test" in closed.value.reply_text

        # Admin: add a user with a tag, see it listed, delete it.
        browser.get(base + "/#/admin/users")
        form = wait.until(EC.visibility_of_element_located((By.ID, "user-form")))
        form.find_element(By.NAME, "name").send_keys("ui-user")
        form.find_element(By.NAME, "password").send_keys("ui-password")
        form.find_element(By.NAME, "tags").send_keys("management")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "admin"), "ui-user"))
        assert broker.http_get("/api/users/ui-user")[0] != 500
        shot(browser, "07-users")
        browser.find_element(By.CSS_SELECTOR, "button.delete-user[data-name=ui-user]").click()
        browser.switch_to.alert.accept()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "User deleted."))

        # A policy from the policies tab applies to the queue.
        browser.get(base + "/#/admin/policies")
        form = wait.until(EC.visibility_of_element_located((By.ID, "policy-form")))
        form.find_element(By.NAME, "name").send_keys("ui-policy")
        form.find_element(By.NAME, "pattern").send_keys("^" + queue + "$")
        Select(form.find_element(By.NAME, "apply")).select_by_value("queues")
        form.find_element(By.NAME, "definition").send_keys('{"max-length": 5}')
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "message"), "Policy ui-policy saved."))
        browser.get(base + f"/#/queues/%2F/{queue}")
        wait.until(EC.text_to_be_present_in_element((By.ID, "view"), "ui-policy"))
        shot(browser, "08-policy-applied")
    finally:
        if connection.is_open:
            connection.close()


def test_ui_stays_responsive_with_10000_queues(broker, browser):
    """10,000 queues: the queue list shows its first page (server-side paging) and the filter finds one."""
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    prefix = f"many-{uuid.uuid4().hex[:6]}"
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
    channel = connection.channel()
    for i in range(10_000):
        channel.queue_declare(f"{prefix}-{i:05d}", auto_delete=False, arguments={"x-expires": 600_000})
    connection.close()
    from selenium.common.exceptions import StaleElementReferenceException

    wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])
    base = f"http://127.0.0.1:{broker.management_port}"
    browser.get(base + "/")
    wait.until(EC.visibility_of_element_located((By.ID, "login-user"))).send_keys("guest")
    browser.find_element(By.ID, "login-password").send_keys("guest")
    browser.find_element(By.ID, "login-submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "total-queues")))
    started = time.monotonic()
    browser.get(base + "/#/queues")
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-list=queues] .count"), "of"))
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-list=queues] tbody tr")
    assert len(rows) == 50
    box = browser.find_element(By.CSS_SELECTOR, "[data-list=queues] .filter")
    box.send_keys(f"{prefix}-09999")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
    wait.until(EC.element_to_be_clickable((By.LINK_TEXT, f"{prefix}-09999")))
    shot(browser, "09-10000-queues")
    # Not a timing assertion (the machine is shared): the page worked; the time is in the log for people.
    print(f"queue page and filter with 10,000 queues: {time.monotonic() - started:.2f} s")
