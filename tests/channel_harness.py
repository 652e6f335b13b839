"""The learner's side of the grading channel in a thread of this process, for tests that need no kernel."""
import socket
import threading

from llmcourse.grading import channel


def remote_namespace(namespace: dict) -> channel.RemoteNamespace:
    """A :class:`~llmcourse.grading.channel.RemoteNamespace` served from ``namespace`` by a thread: every call
    crosses a real socket with the real codec, as it does between the grader and a kernel."""
    grader_end, kernel_end = socket.socketpair()
    kernel = channel.Peer(kernel_end, "kernel", namespace)

    def serve() -> None:
        try:
            while True:
                message, value = kernel.receive()
                if message.get("op") == "bye":
                    return
                kernel.answer(message, value)
        except channel.ChannelError:
            return

    threading.Thread(target=serve, daemon=True).start()
    return channel.RemoteNamespace(channel.Peer(grader_end, "grader"))
